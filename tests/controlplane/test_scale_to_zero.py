"""Scale to zero in a cluster: with minReplicas 0 the model is called through its front; idle, the
autoscaler takes every shard to zero; a request to the front is held, wakes the model, and is answered:
woken by the operator's autoscaler (the front's self-wake off), or by the front itself through its own
ServiceAccount token, also while the operator is stopped, and that token can scale nothing else.

The test plays the kubelet (`operator_harness`): the front runs from the front Deployment's pod
template and the shard's server from the shard's, as local processes. The shard's server listens on
one port, the one the `<name>-live` Service stands for, so while the Deployment asks for zero
replicas that port refuses connections, as a Service without ready endpoints does. A real
Prometheus scrapes the front and the server; the operator reads it.
"""

from __future__ import annotations

import copy
import json
import signal
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane, free_port
from operator_harness import (
    Operator,
    autoscaled_namespace,
    condition,
    events_for,
    get,
    http,
    mark_ready,
    pod_env,
    run_and_finish,
    serve_from_template,
    status_of,
    wait_for,
    wait_object,
)
from prometheus_harness import Prometheus
from tritonclient.grpc import service_pb2 as pb

NAME = "digits-idle"
IDLE_S = 6
REQUEST = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def model_deployment(prometheus_url: str, name: str = NAME) -> str:
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = name
    md["spec"]["autoscaling"] = {
        "minReplicas": 0,
        "maxReplicas": 1,
        "scaleToZeroAfterSeconds": IDLE_S,
        "stabilizationWindowSeconds": 2,
        "prometheus": {"url": prometheus_url},
    }
    return yaml.safe_dump_all(documents)


class PlayedKubelet:
    """The front, always; the shard's one server while the Deployment asks for a replica."""

    def __init__(
        self,
        cluster: ControlPlane,
        prometheus: Prometheus,
        namespace: str,
        workdir: Path,
        name: str = NAME,
        scraped: dict[str, list[tuple[str, dict[str, str]]]] | None = None,
    ) -> None:
        self.cluster, self.prometheus, self.namespace, self.workdir = cluster, prometheus, namespace, workdir
        self.name = name
        self.scraped = {} if scraped is None else scraped  # every played model's targets, by model
        self.live_port = free_port()
        self.live_grpc_port = free_port()  # the `<name>-live` Service's gRPC port
        self.front_port = free_port()
        self.front_grpc_port = free_port()
        self.front: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

    @property
    def front_url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def start_front(self, *extra: str) -> None:
        """The front from its pod template; `extra` flags after its own (how it reaches the API server)."""
        deployment = get(self.cluster, "deployment", self.namespace, f"{self.name}-front")
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command = list(container["command"])
        command[command.index("--upstream") + 1] = f"http://127.0.0.1:{self.live_port}"  # <name>-live
        command[command.index("--port") + 1] = str(self.front_port)
        command[command.index("--host") + 1] = "127.0.0.1"
        command[command.index("--grpc-port") + 1] = str(self.front_grpc_port)
        command[command.index("--grpc-upstream") + 1] = f"127.0.0.1:{self.live_grpc_port}"
        command += extra
        with (self.workdir / f"front-{self.name}.log").open("ab") as log:
            self.front = subprocess.Popen(command, env=pod_env(container, {}), cwd=self.workdir, stdout=log,
                                          stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while http("GET", f"{self.front_url}/v2/health/ready")[0] != 200:
            assert self.front.poll() is None and time.monotonic() < deadline, "the front did not start"
            time.sleep(0.1)
        mark_ready(self.cluster, deployment)
        self._targets()

    def front_log(self) -> str:
        return (self.workdir / f"front-{self.name}.log").read_text(errors="replace")

    def sync(self) -> int:
        deployment = get(self.cluster, "deployment", self.namespace, f"{self.name}-g1-shard-0")
        assert deployment is not None
        wanted = int(deployment["spec"]["replicas"])
        running = 0 if self.server is None else 1
        if wanted == running:
            return wanted
        if wanted > 0:
            # On the port the `<name>-live` Service routes to: nothing listens there at zero replicas.
            template = copy.deepcopy(deployment)  # gRPC on the port `<name>-live` stands for (the last flag wins)
            template["spec"]["template"]["spec"]["containers"][0]["command"] += ["--grpc-port", str(self.live_grpc_port)]
            self.server, _ = serve_from_template(template, self.workdir, port=self.live_port)
            self._wait_ready(self.server, self.live_port)
        else:
            assert self.server is not None
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(30)
            self.server = None
        self._targets()
        mark_ready(self.cluster, deployment)
        return wanted

    def _targets(self) -> None:
        targets = [(f"127.0.0.1:{self.front_port}", {"pod": f"{self.name}-front-0"})]
        if self.server is not None:
            targets.append((f"127.0.0.1:{self.live_port}", {"pod": f"{self.name}-g1-shard-0-0"}))
        self.scraped[self.name] = targets
        self.prometheus.set_targets([target for every in self.scraped.values() for target in every])

    def _wait_ready(self, server: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, f"server on {port} exited {server.returncode}"
            if http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"server on {port} not ready")

    def stop(self) -> None:
        for process in (self.server, self.front):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(90)


@pytest.fixture(scope="module")
def live(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("scale-to-zero")
    args = ["--autoscale-interval", "1", "--rate-window", "10s"]
    with autoscaled_namespace(crds_installed, work, "scale-to-zero", args) as (
        operator,
        prometheus,
        namespace,
    ):
        kubelet = PlayedKubelet(crds_installed, prometheus, namespace, work)
        try:
            yield {"operator": operator, "prometheus": prometheus, "kubelet": kubelet, "namespace": namespace,
                   "work": work}  # fmt: skip
        finally:
            kubelet.stop()


def test_idle_goes_to_zero_and_a_request_to_the_front_wakes_it_and_is_answered(live: dict[str, Any]) -> None:
    operator: Operator = live["operator"]
    prometheus: Prometheus = live["prometheus"]
    kubelet: PlayedKubelet = live["kubelet"]
    cluster, ns = operator.cluster, live["namespace"]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=model_deployment(prometheus.url))
    for job in (f"{NAME}-g1-compress", f"{NAME}-g1-profile-local-cpu"):
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), live["work"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    wait_object(cluster, operator, "deployment", ns, f"{NAME}-g1-shard-0")
    endpoint = wait_object(cluster, operator, "service", ns, NAME)
    assert endpoint["spec"]["selector"]["app.kubernetes.io/component"] == "front"
    wait_object(cluster, operator, "service", ns, f"{NAME}-live")
    wait_object(cluster, operator, "deployment", ns, f"{NAME}-front")
    kubelet.start_front("--self-wake", "off")  # this test is the operator's wake: its autoscaler alone
    assert kubelet.sync() == 1
    wait_for("phase Serving", lambda: status_of(cluster, ns, NAME).get("phase") == "Serving", operator)
    code, body = http("POST", f"{kubelet.front_url}/v2/models/{NAME}/infer", REQUEST)
    assert code == 200 and len(body["outputs"][0]["data"]) == 10

    # No requests for scaleToZeroAfterSeconds: to zero, with reason Idle.
    wait_for("a scale to zero", lambda: kubelet.sync() == 0, operator, timeout_s=90)
    asleep = wait_for(
        "the status at zero",
        lambda: (
            (s := status_of(cluster, ns, NAME)).get("autoscaling", {}).get("desiredReplicas") == [0] and s
        ),
        operator,
    )
    assert asleep["autoscaling"]["reason"] == "Idle"
    assert asleep["phase"] == "Serving" and "scaled to zero" in condition(asleep, "Ready")["message"]
    down = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "ScaledDown"]
    assert any("Idle" in e["message"] for e in down), down
    assert http("GET", f"http://127.0.0.1:{kubelet.live_port}/v2/health/ready")[0] == 0  # nothing listens

    # A request to the front is held; its demand wakes the model; it is answered.
    answers: list[tuple[int, Any]] = []
    started = time.monotonic()
    client = threading.Thread(
        target=lambda: answers.append(http("POST", f"{kubelet.front_url}/v2/models/{NAME}/infer", REQUEST))
    )
    client.start()
    wait_for("the wake-up", lambda: kubelet.sync() == 1, operator, timeout_s=60)
    client.join(60)
    waited = time.monotonic() - started
    assert answers and answers[0][0] == 200, answers
    assert len(answers[0][1]["outputs"][0]["data"]) == 10
    assert waited < 60  # within the front's hold deadline
    print(f"\nwake (operator running, front's self-wake off): {waited:.2f} s")
    up = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "ScaledUp"]
    assert any("Waking" in e["message"] for e in up), up
    # The front's own account of it, as Prometheus scraped it: one request held, for as long as it waited.
    prometheus.wait_for_series(
        f'frugal_front_hold_duration_seconds_count{{model="{NAME}"}}',
        predicate=lambda result: float(result[0]["value"][1]) >= 1,
    )


# -- the front wakes the model itself ----------------------------------------------------------------

SELF = "digits-self"


def front_token(cluster: ControlPlane, namespace: str, workdir: Path, name: str) -> Path:
    """A token of the front's own ServiceAccount, as the kubelet would mount it."""
    token = cluster.kubectl("create", "token", f"{name}-front", "-n", namespace, "--duration=1h").stdout.strip()
    path = workdir / f"token-{name}"
    path.write_text(token)
    return path


def as_token(cluster: ControlPlane, token: Path, method: str, path: str, body: Any = None) -> int:
    """The status the API server answers `token`'s bearer for `method path`."""
    context = ssl.create_default_context(cafile=str(cluster.cert_dir / "ca.crt"))
    headers = {"Authorization": f"Bearer {token.read_text()}", "Content-Type": "application/merge-patch+json"}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(cluster.server_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def held_request_answered(kubelet: PlayedKubelet, operator: Operator, grpc_too: bool = False) -> float:
    """Send a request to the front of a model at zero (and with `grpc_too` a gRPC ModelInfer beside it),
    play the kubelet until it is answered; the REST request's wait."""
    answers: list[tuple[int, Any]] = []
    started = time.monotonic()
    client = threading.Thread(
        target=lambda: answers.append(http("POST", f"{kubelet.front_url}/v2/models/{kubelet.name}/infer", REQUEST))
    )
    client.start()
    with grpc.insecure_channel(f"127.0.0.1:{kubelet.front_grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                    response_deserializer=None)  # fmt: skip
        called = infer.future(grpc_request(kubelet.name), timeout=60) if grpc_too else None
        wait_for("the front's wake", lambda: kubelet.sync() == 1, operator, timeout_s=60)
        client.join(60)
        waited = time.monotonic() - started
        assert answers and answers[0][0] == 200, (answers, kubelet.front_log()[-3000:])
        assert len(answers[0][1]["outputs"][0]["data"]) == 10
        if called is not None:
            answer = pb.ModelInferResponse.FromString(called.result(timeout=60))
            assert answer.model_name == kubelet.name and list(answer.outputs[0].shape) == [1, 10]
    return waited


def grpc_request(model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(struct.pack("<64f", *REQUEST["inputs"][0]["data"]))
    return request.SerializeToString()


def test_the_front_wakes_the_model_itself_with_the_operator_stopped_and_its_token_scales_nothing_else(
    live: dict[str, Any],
) -> None:
    operator: Operator = live["operator"]
    prometheus: Prometheus = live["prometheus"]
    cluster, ns, work = operator.cluster, live["namespace"], live["work"]
    kubelet = PlayedKubelet(cluster, prometheus, ns, work, SELF, live["kubelet"].scraped)
    try:
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=model_deployment(prometheus.url, SELF))
        for job in (f"{SELF}-g1-compress", f"{SELF}-g1-profile-local-cpu"):
            proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), work)
            assert proc.returncode == 0, proc.stderr[-3000:]
        role = wait_object(cluster, operator, "role", ns, f"{SELF}-front")
        scale_rule = next(r for r in role["rules"] if r["resources"] == ["deployments/scale"])
        assert scale_rule["resourceNames"] == [f"{SELF}-g1-shard-0"]
        wait_object(cluster, operator, "rolebinding", ns, f"{SELF}-front")
        wait_object(cluster, operator, "service", ns, f"{SELF}-live")
        token = front_token(cluster, ns, work, SELF)
        kubelet.start_front("--kube-api-url", cluster.server_url, "--kube-token-file", str(token),
                            "--kube-ca-file", str(cluster.cert_dir / "ca.crt"))  # fmt: skip
        assert kubelet.sync() == 1
        wait_for("phase Serving", lambda: status_of(cluster, ns, SELF).get("phase") == "Serving", operator)
        wait_for("a scale to zero", lambda: kubelet.sync() == 0, operator, timeout_s=90)

        # The operator running: the front's wake comes first (it needs no scrape and no tick), and the
        # autoscaler keeps the model it did not wake awake (no flap back to zero under the request).
        running = held_request_answered(kubelet, operator)
        wait_for("a scale to zero again", lambda: kubelet.sync() == 0, operator, timeout_s=90)

        # The operator stopped: nothing but the front can wake the model now, for REST or gRPC.
        operator.stop()
        stopped = held_request_answered(kubelet, operator, grpc_too=True)
        print(f"\nwake by the front (operator running): {running:.2f} s; (operator stopped): {stopped:.2f} s")
        scrape = urllib.request.urlopen(f"{kubelet.front_url}/metrics", timeout=10).read().decode()
        woken = [line for line in scrape.splitlines() if line.startswith("frugal_front_wakes_total") and 'result="woken"' in line]
        assert woken and float(woken[0].split()[-1]) >= 1, scrape
        assert "front: woke" in kubelet.front_log()
        shard = json.loads(cluster.kubectl("get", "deployment", f"{SELF}-g1-shard-0", "-n", ns, "-o", "json",
                                           "--show-managed-fields").stdout)  # fmt: skip
        assert shard["spec"]["replicas"] == 1
        managers = {(f["manager"], f.get("subresource", "")) for f in shard["metadata"]["managedFields"]}
        assert ("frugal-front", "scale") in managers, managers

        # Narrow: the front's token scales its own live shard and nothing else, and reads only <name>-live.
        cluster.kubectl("create", "deployment", "another-model", "-n", ns, "--image=example.invalid/x",
                        "--replicas=0")  # fmt: skip
        up = {"spec": {"replicas": 1}}
        scale = f"/apis/apps/v1/namespaces/{ns}/deployments/{{}}/scale"
        assert as_token(cluster, token, "GET", scale.format(f"{SELF}-g1-shard-0")) == 200
        assert as_token(cluster, token, "PATCH", scale.format("another-model"), up) == 403
        assert as_token(cluster, token, "PATCH", scale.format(f"{NAME}-g1-shard-0"), up) == 403
        assert as_token(cluster, token, "PATCH", scale.format(f"{SELF}-front"), {"spec": {"replicas": 0}}) == 403
        assert as_token(cluster, token, "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{SELF}-g1-shard-0",
                        {"spec": {"replicas": 5}}) == 403  # the scale alone, not the Deployment  # fmt: skip
        assert as_token(cluster, token, "GET", f"/api/v1/namespaces/{ns}/services/{SELF}-live") == 200
        assert as_token(cluster, token, "GET", f"/api/v1/namespaces/{ns}/services/{SELF}") == 403
        assert as_token(cluster, token, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments") == 403
    finally:
        kubelet.stop()
        if operator.proc is None:
            operator.start()
