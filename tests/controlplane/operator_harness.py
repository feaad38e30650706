"""The operator as a test sees it: its process, and the parts of a kubelet and a Job controller the
test plays (no kubelet runs on the control-plane tier).

The test runs the command of each created pod template on this machine as written (only the image
is not used; a server's port and listen address are set to a free loopback port), then records the
outcome in the object's status through the status subresource, as a kubelet and the Job controller
would.
"""

from __future__ import annotations

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

from controlplane_harness import REPO_ROOT, ControlPlane, free_port
from prometheus_harness import Prometheus

VENV_BIN = Path(sys.executable).parent
WAIT_S = 90.0


class Operator:
    """The operator as a subprocess; restartable."""

    def __init__(
        self, cluster: ControlPlane, storage: Path, log: Path, extra_args: Sequence[str] = ()
    ) -> None:
        self.cluster, self.storage, self.log = cluster, storage, log
        self.extra_args = list(extra_args)
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "frugal.operator.cluster.operator_command", "--kubeconfig", str(self.cluster.kubeconfig),
            "--storage-uri", f"file://{self.storage}", "--metrics-port", str(self.metrics_port),
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

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- playing kubelet and Job controller ---------------------------------------------------------------


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


def pod_env(container: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, str]:
    """The container's env as a process sees it: values as written, fieldRefs from `fields`."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def run_job_command(job: Mapping[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.namespace": job["metadata"]["namespace"]}
    return subprocess.run(container["command"], env=pod_env(container, fields), cwd=workdir, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finish_job(cluster: ControlPlane, job: Mapping[str, Any], succeeded: bool, message: str = "") -> None:
    """Record the Job's outcome in its status, as the Job controller does (retried: it races with us)."""
    meta = job["metadata"]
    for attempt in range(5):
        current = get(cluster, "job", meta["namespace"], meta["name"]) or job
        patch = {
            "status": job_outcome((current.get("status") or {}).get("startTime") or now(), succeeded, message)
        }
        proc = cluster.kubectl("patch", "job", meta["name"], "-n", meta["namespace"], "--subresource=status",
                               "--type=merge", "-p", json.dumps(patch), check=attempt == 4)  # fmt: skip
        if proc.returncode == 0:
            return
        time.sleep(0.5)


def job_outcome(start: str, succeeded: bool, message: str) -> dict[str, Any]:
    if succeeded:
        return {
            "startTime": start, "completionTime": now(), "active": 0, "ready": 0, "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": ""},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": ""},
            ],
        }  # fmt: skip
    return {
        "startTime": start, "active": 0, "ready": 0, "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": message},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message},
        ],
    }  # fmt: skip


def run_and_finish(
    cluster: ControlPlane, job: Mapping[str, Any], workdir: Path
) -> subprocess.CompletedProcess[str]:
    proc = run_job_command(job, workdir)
    output = (proc.stderr or proc.stdout or "").strip().splitlines()
    finish_job(cluster, job, proc.returncode == 0, output[-1] if output else f"exit code {proc.returncode}")
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
    deployment: Mapping[str, Any], workdir: Path, next_stage: str | None = None, port: int | None = None
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
    env = pod_env(container, {"metadata.namespace": deployment["metadata"]["namespace"]})
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


@contextmanager
def autoscaled_namespace(
    cluster: ControlPlane, work: Path, namespace: str, operator_args: Sequence[str]
) -> Iterator[tuple[Operator, Prometheus, str]]:
    """A Prometheus scraping every second, the operator reading it (`operator_args`: its autoscaler
    flags), and a namespace to apply into; all stopped afterwards."""
    prometheus = Prometheus(work / "prometheus", interval_s=1.0)
    prometheus.start()
    operator = Operator(cluster, work / "artifacts", work / "operator.log", operator_args)
    try:
        operator.start()
        yield operator, prometheus, create_namespace(cluster, namespace)
    finally:
        operator.stop()
        prometheus.stop()
