"""The operator as a test sees it: its process, and the parts of a kubelet and a Job controller the
test plays (no kubelet runs on the control-plane tier).

The test runs the command of each created pod template on this machine as written (only the image
is not used; a server's port and listen address are set to a free loopback port), then records the
outcome in the object's status through the status subresource, as a kubelet and the Job controller
would.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from controlplane_harness import EXAMPLES_DIR, REPO_ROOT, ControlPlane, free_port, kubeconfig_document
from prometheus_harness import Prometheus

VENV_BIN = Path(sys.executable).parent
WAIT_S = 90.0


CHART = REPO_ROOT / "charts" / "frugal"
CHART_RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# Its own release name: the cluster-scoped ClusterRole and binding it applies must not be the ones a
# `helm install frugal` in test_helm.py creates (helm refuses to adopt objects it did not make).
IDENTITY_RELEASE = "frugal-identity"
IDENTITY_USER = f"system:serviceaccount:frugal-system:{IDENTITY_RELEASE}"


def chart_identity(
    cluster: ControlPlane, workdir: Path, namespace: str = "frugal-system", values: Sequence[str] = ()
) -> Path:
    """A kubeconfig holding the chart's own ServiceAccount token, bound by nothing but the chart's
    rendered RBAC (helm template, default values but `values`, helm flags): run the operator with it
    and a verb the code needs and the chart lacks fails the test that needs it."""
    rendered = cluster.helm(
        "template", IDENTITY_RELEASE, CHART, "--namespace", namespace, "--set", "crds.install=false", *values
    ).stdout
    rbac = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in CHART_RBAC_KINDS]
    accounts = [d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"]
    assert len(accounts) == 1 and any(d["kind"] == "ClusterRoleBinding" for d in rbac), [d["kind"] for d in rbac]
    if cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    token = cluster.kubectl("create", "token", accounts[0], "-n", namespace, "--duration=4h").stdout.strip()
    user = f"system:serviceaccount:{namespace}:{accounts[0]}"
    document = kubeconfig_document(cluster.server_url, (cluster.cert_dir / "ca.crt").read_bytes(), user, token)
    path = workdir / "kubeconfig-operator"
    path.write_text(yaml.safe_dump(document))
    return path


class Operator:
    """The operator as a subprocess; restartable."""

    def __init__(
        self,
        cluster: ControlPlane,
        storage: Path,
        log: Path,
        extra_args: Sequence[str] = (),
        host_path: bool = True,
        kubeconfig: Path | None = None,
    ) -> None:
        """`storage`: the artifact directory on this machine — a file:// store, which the operator
        refuses unless started with --allow-host-path (`host_path`; without it, the chart's default
        pvc:// store, which nothing here can read). `kubeconfig`: whom it runs as (default: the
        admin; :func:`chart_identity` for the chart's ServiceAccount)."""
        self.cluster, self.storage, self.log = cluster, storage, log
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.extra_args = list(extra_args)
        self.host_path = host_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "frugal.operator.cluster.operator_command", "--kubeconfig", str(self.kubeconfig),
            *(["--allow-host-path", "--storage-uri", f"file://{self.storage}"] if self.host_path else []),
            "--metrics-port", str(self.metrics_port),
            "--metrics-host", "127.0.0.1", "--health-port", str(self.health_port), "--interval", "1",
            "--image", "frugal:test", "--autoscale-interval", "1", *self.extra_args,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.cluster.env, cwd=REPO_ROOT
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or released (a node lost, an OOM kill)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- playing kubelet and Job controller ---------------------------------------------------------------


def operator_counter(operator: Operator, name: str) -> float:
    """One unlabelled series of the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


TICKS = "frugal_autoscaler_tick_duration_seconds_count"


def wait_ticks(operator: Operator, ticks: int) -> None:
    """Let `ticks` autoscaler ticks pass — what a negative check waits on instead of a sleep: the
    operator demonstrably ran that long and could have acted."""
    start = operator_counter(operator, TICKS)
    wait_for(f"{ticks} autoscaler ticks", lambda: operator_counter(operator, TICKS) >= start + ticks, operator)


def kubectl_json(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def get(cluster: ControlPlane, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wait_for(what: str, check: Callable[[], Any], operator: Operator, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; operator log:\n{operator.tail()}")


def wait_object(
    cluster: ControlPlane, operator: Operator, kind: str, namespace: str, name: str
) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(f"{kind} {name}", lambda: get(cluster, kind, namespace, name), operator)
    return found


def status_of(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    md = get(cluster, "modeldeployment", namespace, name) or {}
    status: dict[str, Any] = md.get("status") or {}
    return status


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def pod_env(
    container: Mapping[str, Any], fields: Mapping[str, str], cluster: ControlPlane | None = None
) -> dict[str, str]:
    """The container's env as a process sees it: values as written, fieldRefs from `fields`, and
    secretKeyRefs read from the Secret in the pod's namespace (`fields["metadata.namespace"]`), as the
    kubelet reads them: a missing Secret or key fails unless the reference is optional."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            assert cluster is not None, f"{entry['name']} comes from a Secret: pass the cluster"
            value = secret_key(cluster, fields["metadata.namespace"], entry["valueFrom"]["secretKeyRef"])
            if value is not None:
                env[entry["name"]] = value
        else:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def secret_key(cluster: ControlPlane, namespace: str, ref: Mapping[str, Any]) -> str | None:
    secret = get(cluster, "secret", namespace, ref["name"])
    data = (secret or {}).get("data") or {}
    if ref["key"] not in data:
        assert ref.get("optional"), f"CreateContainerConfigError: Secret {namespace}/{ref['name']} has no {ref['key']}"
        return None
    return base64.b64decode(data[ref["key"]]).decode()


def run_job_command(
    job: Mapping[str, Any], workdir: Path, cluster: ControlPlane | None = None
) -> subprocess.CompletedProcess[str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.namespace": job["metadata"]["namespace"]}
    return subprocess.run(container["command"], env=pod_env(container, fields, cluster), cwd=workdir,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def complete_job(cluster: ControlPlane, job: Mapping[str, Any]) -> None:
    """Record the Job's success in its status, as the Job controller does (retried: it races with us).
    A failure goes through the pod instead: :func:`terminate_as_kubelet`."""
    meta = job["metadata"]
    for attempt in range(5):
        current = get(cluster, "job", meta["namespace"], meta["name"]) or job
        start = (current.get("status") or {}).get("startTime") or now()
        status = {
            "startTime": start, "completionTime": now(), "active": 0, "ready": 0, "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": ""},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": ""},
            ],
        }  # fmt: skip
        proc = cluster.kubectl("patch", "job", meta["name"], "-n", meta["namespace"], "--subresource=status",
                               "--type=merge", "-p", json.dumps({"status": status}), check=attempt == 4)  # fmt: skip
        if proc.returncode == 0:
            return
        time.sleep(0.5)


# What FallbackToLogsOnError keeps of a failed container's log as its termination message.
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048


def fallback_message(log: str) -> str:
    """The kubelet's termination message for a container that wrote no termination-log file: the last
    80 lines of its log, at most the last 2048 bytes."""
    tail = "\n".join(log.rstrip("\n").splitlines()[-LOG_TAIL_LINES:]).encode()
    return tail[-LOG_TAIL_BYTES:].decode(errors="replace")


def job_pods(cluster: ControlPlane, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta = job["metadata"]
    selector = f"batch.kubernetes.io/job-name={meta['name']}"
    return list(kubectl_json(cluster, "get", "pods", "-n", meta["namespace"], "-l", selector)["items"])


def terminate_as_kubelet(
    cluster: ControlPlane, job: Mapping[str, Any], exit_code: int, log: str, timeout_s: float = 60
) -> dict[str, Any]:
    """End the Job's running pod as the kubelet ends a pod whose container exited with `exit_code`:
    phase, conditions and `containerStatuses[].state.terminated` (exit code, reason, and for a failure
    the log's tail as the message). The Job controller, not the test, then decides what the Job is:
    retried, failed or complete. Waits for the controller to have created the pod; returns it."""
    deadline = time.monotonic() + timeout_s
    while not (running := [p for p in job_pods(cluster, job) if p["status"].get("phase") not in ("Succeeded", "Failed")]):
        assert time.monotonic() < deadline, f"no running pod of Job {job['metadata']['name']} after {timeout_s:.0f} s"
        time.sleep(0.2)
    pod = running[0]
    container = pod["spec"]["containers"][0]
    stamp = now()
    terminated: dict[str, Any] = {
        "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": stamp, "finishedAt": stamp,
    }  # fmt: skip
    if exit_code != 0:
        terminated["message"] = fallback_message(log)
    ended = "PodCompleted" if exit_code == 0 else "PodFailed"
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": "False", "reason": ended, "lastTransitionTime": stamp},
            {"type": "Ready", "status": "False", "reason": ended, "lastTransitionTime": stamp},
        ],
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "restartCount": 0, "started": False, "state": {"terminated": terminated},
        }],
    }  # fmt: skip
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"],
                    "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
    return pod


def run_and_finish(
    cluster: ControlPlane, job: Mapping[str, Any], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run the Job's command here, as its pod would run; a success is recorded in the Job's status, a
    failure through the pod's status as the kubelet writes it (the Job controller then fails the Job,
    or retries it: exit code 2 fails it at once, by the Job's podFailurePolicy)."""
    proc = run_job_command(job, workdir, cluster)
    if proc.returncode == 0:
        complete_job(cluster, job)
    else:
        terminate_as_kubelet(cluster, job, proc.returncode, (proc.stdout or "") + (proc.stderr or ""))
    return proc


def mark_ready(cluster: ControlPlane, deployment: Mapping[str, Any]) -> None:
    """Make the Deployment's pods Ready (the kubelet's job); without pods, set the Deployment's status."""
    meta, spec = deployment["metadata"], deployment["spec"]
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
    pods = kubectl_json(cluster, "get", "pods", "-n", meta["namespace"], "-l", selector)["items"]
    ready = [{"type": t, "status": "True", "lastTransitionTime": now()}
             for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]  # fmt: skip
    for pod in pods:
        patch = {"status": {"phase": "Running", "conditions": ready}}
        cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", meta["namespace"], "--subresource=status",
                        "--type=merge", "-p", json.dumps(patch))  # fmt: skip
    if not pods:
        replicas = spec["replicas"]
        patch = {"status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                            "updatedReplicas": replicas, "observedGeneration": meta["generation"]}}  # fmt: skip
        cluster.kubectl("patch", "deployment", meta["name"], "-n", meta["namespace"], "--subresource=status",
                        "--type=merge", "-p", json.dumps(patch))  # fmt: skip


def serve_from_template(
    deployment: Mapping[str, Any],
    workdir: Path,
    next_stage: str | None = None,
    port: int | None = None,
    cluster: ControlPlane | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the pod template's server command with its env, on a loopback port (a free one by default)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = list(container["command"])
    port = free_port() if port is None else port
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--grpc-port") + 1] = "0"  # pods each have 8081; processes here share loopback
    if next_stage is not None:
        command[command.index("--next-stage") + 1] = next_stage
    env = pod_env(container, {"metadata.namespace": deployment["metadata"]["namespace"]}, cluster)
    with (workdir / f"serve-{port}.log").open("wb") as log:  # a file, so a chatty server never blocks
        proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def events_for(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(
        cluster, "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


def create_namespace(cluster: ControlPlane, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def delete_namespaces(cluster: ControlPlane, prefix: str, timeout_s: int = 180) -> None:
    """Delete every namespace whose name starts with `prefix` and wait until they are gone. Call it while
    the operator that serves them still runs (it removes its finalizers): every later module's operator
    serves all namespaces, and a model left behind costs its passes API requests."""
    names = [n.removeprefix("namespace/") for n in cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()]
    doomed = [n for n in names if n.startswith(prefix)]
    if doomed:
        cluster.kubectl("delete", "namespace", *doomed, "--wait=true", f"--timeout={timeout_s}s")


@contextmanager
def chart_operator(
    cluster: ControlPlane,
    work: Path,
    values: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    host_path: bool = True,
) -> Iterator[Operator]:
    """The operator (`extra_args`: its flags; `host_path`: as :class:`Operator`'s) started as the chart's
    ServiceAccount, whose RBAC is rendered with helm `values` (:func:`chart_identity`), its artifacts and
    log in `work`; stopped afterwards."""
    operator = Operator(cluster, work / "artifacts", work / "operator.log", extra_args, host_path,
                        kubeconfig=chart_identity(cluster, work, values=values))  # fmt: skip
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def digits_published(cluster: ControlPlane, operator: Operator, namespace: str, pods: Path) -> str:
    """A new `namespace` with examples/digits.yaml applied and its compression and profiling Jobs run
    to success as their pods would (in `pods`): the model is published and profiled. Returns the
    namespace."""
    ns = create_namespace(cluster, namespace)
    pods.mkdir(parents=True, exist_ok=True)
    cluster.kubectl("apply", "-n", ns, "-f", EXAMPLES_DIR / "digits.yaml")
    for job in ("digits-g1-compress", "digits-g1-profile-local-cpu"):
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), pods)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return ns


@contextmanager
def autoscaled_namespace(
    cluster: ControlPlane, work: Path, namespace: str, operator_args: Sequence[str]
) -> Iterator[tuple[Operator, Prometheus, str]]:
    """A Prometheus scraping every second, the operator reading it (`operator_args`: its autoscaler
    flags) as the chart's ServiceAccount (a verb the autoscaler needs and the chart lacks fails the
    test), and a namespace to apply into; all stopped afterwards."""
    prometheus = Prometheus(work / "prometheus", interval_s=1.0)
    prometheus.start()
    identity = chart_identity(cluster, work)
    operator = Operator(cluster, work / "artifacts", work / "operator.log", operator_args, kubeconfig=identity)
    try:
        operator.start()
        yield operator, prometheus, create_namespace(cluster, namespace)
    finally:
        operator.stop()
        prometheus.stop()
