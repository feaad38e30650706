"""Scale to zero in a cluster: with minReplicas 0 the model is called through its front; idle, the
autoscaler takes every shard to zero; a request to the front is held, wakes the model, and is answered.

The test plays the kubelet (`operator_harness`): the front runs from the front Deployment's pod
template and the shard's server from the shard's, as local processes. The shard's server listens on
one port, the one the `<name>-live` Service stands for, so while the Deployment asks for zero
replicas that port refuses connections, as a Service without ready endpoints does. A real
Prometheus scrapes the front and the server; the operator reads it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

NAME = "digits-idle"
IDLE_S = 6
REQUEST = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def model_deployment(prometheus_url: str) -> str:
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = NAME
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

    def __init__(self, cluster: ControlPlane, prometheus: Prometheus, namespace: str, workdir: Path) -> None:
        self.cluster, self.prometheus, self.namespace, self.workdir = cluster, prometheus, namespace, workdir
        self.live_port = free_port()
        self.front_port = free_port()
        self.front: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

    @property
    def front_url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def start_front(self) -> None:
        deployment = get(self.cluster, "deployment", self.namespace, f"{NAME}-front")
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command = list(container["command"])
        command[command.index("--upstream") + 1] = f"http://127.0.0.1:{self.live_port}"  # <name>-live
        command[command.index("--port") + 1] = str(self.front_port)
        command[command.index("--host") + 1] = "127.0.0.1"
        with (self.workdir / "front.log").open("wb") as log:
            self.front = subprocess.Popen(command, env=pod_env(container, {}), cwd=self.workdir, stdout=log,
                                          stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while http("GET", f"{self.front_url}/v2/health/ready")[0] != 200:
            assert self.front.poll() is None and time.monotonic() < deadline, "the front did not start"
            time.sleep(0.1)
        mark_ready(self.cluster, deployment)
        self._targets()

    def sync(self) -> int:
        deployment = get(self.cluster, "deployment", self.namespace, f"{NAME}-g1-shard-0")
        assert deployment is not None
        wanted = int(deployment["spec"]["replicas"])
        running = 0 if self.server is None else 1
        if wanted == running:
            return wanted
        if wanted > 0:
            # On the port the `<name>-live` Service routes to: nothing listens there at zero replicas.
            self.server, _ = serve_from_template(deployment, self.workdir, port=self.live_port)
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
        targets = [(f"127.0.0.1:{self.front_port}", {"pod": f"{NAME}-front-0"})]
        if self.server is not None:
            targets.append((f"127.0.0.1:{self.live_port}", {"pod": f"{NAME}-g1-shard-0-0"}))
        self.prometheus.set_targets(targets)

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
    kubelet.start_front()
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
    up = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "ScaledUp"]
    assert any("Waking" in e["message"] for e in up), up
    # The front's own account of it, as Prometheus scraped it: one request held, for as long as it waited.
    prometheus.wait_for_series(
        f'frugal_front_hold_duration_seconds_count{{model="{NAME}"}}',
        predicate=lambda result: float(result[0]["value"][1]) >= 1,
    )
