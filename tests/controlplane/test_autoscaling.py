"""The autoscaler live: a real Prometheus scrapes real `frugal serve` processes started from the pod
template the operator created, the operator reads it and sets the Deployment's replicas.

The test plays the kubelet (`operator_harness`): it keeps as many server processes running as the
Deployment's spec.replicas asks for, points Prometheus at them and reports them ready. A closed-loop
load above what one replica answers within the SLO raises the count; Prometheus stopped holds the
count and says why; once metrics return with no load the count falls back to the minimum after the
stabilisation window. An edit of spec.autoscaling alone does not compress again.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_queries import check_alert_rules_live, check_dashboard_live
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    autoscaled_namespace,
    condition,
    events_for,
    get,
    http,
    kubectl_json,
    mark_ready,
    run_and_finish,
    serve_from_template,
    status_of,
    wait_for,
    wait_object,
    wait_ticks,
)
from prometheus_harness import Prometheus

NAME = "digits-autoscaled"
WINDOW_S = 8
SCALE_UP = {"LatencyAboveSLO", "QueueGrowing", "LoadAboveCapacity"}
REQUEST = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def model_deployment(prometheus_url: str) -> str:
    """The digits example with a tight SLO (a loaded 2-core machine answers HTTP in more than 3 ms),
    batching that keeps the profiled latency well inside it, and a short stabilisation window."""
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = NAME
    md["spec"]["serving"]["slo"] = {"latencyP95Ms": 3}
    md["spec"]["serving"]["batching"] = {"maxBatchSize": 8, "maxDelayMs": 0.5}
    md["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "stabilizationWindowSeconds": WINDOW_S,
        "prometheus": {"url": prometheus_url},
    }
    return yaml.safe_dump_all(documents)


class PlayedKubelet:
    """Runs as many servers as the Deployment asks for, each a Prometheus target, and reports them ready."""

    def __init__(
        self, cluster: ControlPlane, prometheus: Prometheus, namespace: str, workdir: Path, operator_metrics: str
    ) -> None:
        self.cluster, self.prometheus, self.namespace, self.workdir = cluster, prometheus, namespace, workdir
        self.servers: list[tuple[subprocess.Popen[bytes], int]] = []
        self.operator_metrics = operator_metrics  # scraped too, as the chart's ServiceMonitor would

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self.servers]

    def sync(self) -> int:
        deployment = get(self.cluster, "deployment", self.namespace, f"{NAME}-g1-shard-0")
        assert deployment is not None
        wanted = int(deployment["spec"]["replicas"])
        if wanted == len(self.servers):
            return wanted
        while len(self.servers) < wanted:
            server, port = serve_from_template(deployment, self.workdir)
            self._wait_ready(server, port)
            self.servers.append((server, port))
        while len(self.servers) > wanted:
            server, _ = self.servers.pop()
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        self.prometheus.set_targets(
            [(f"127.0.0.1:{port}", {"pod": f"{NAME}-g1-shard-0-{i}"}) for i, port in enumerate(self.ports)]
            + [(self.operator_metrics, {"pod": "frugal-operator"})]
        )
        mark_ready(self.cluster, deployment)
        return wanted

    def _wait_ready(self, server: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, f"server on {port} exited {server.returncode}"
            if http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"server on {port} not ready")

    def stop(self) -> None:
        for server, _ in self.servers:
            server.send_signal(signal.SIGTERM)
        for server, _ in self.servers:
            server.wait(30)


class Load:
    """Closed-loop clients spreading requests over the running servers (the Service's part)."""

    def __init__(self, kubelet: PlayedKubelet, clients: int = 8) -> None:
        self.kubelet, self.clients = kubelet, clients
        self.stop_event = threading.Event()
        self.codes: dict[int, int] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(15)

    def _client(self, index: int) -> None:
        for turn in itertools.count(index):
            if self.stop_event.is_set():
                return
            ports = self.kubelet.ports
            code, _ = http(
                "POST", f"http://127.0.0.1:{ports[turn % len(ports)]}/v2/models/{NAME}/infer", REQUEST
            )
            with self._lock:
                self.codes[code] = self.codes.get(code, 0) + 1


@pytest.fixture(scope="module")
def live(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("autoscaling")
    args = ["--autoscale-interval", "2", "--rate-window", "10s"]
    with autoscaled_namespace(crds_installed, work, "autoscaling", args) as (operator, prometheus, namespace):
        kubelet = PlayedKubelet(crds_installed, prometheus, namespace, work, f"127.0.0.1:{operator.metrics_port}")
        try:
            yield {"operator": operator, "prometheus": prometheus, "kubelet": kubelet, "namespace": namespace,
                   "work": work}  # fmt: skip
        finally:
            kubelet.stop()


def p95_shown(cluster: ControlPlane, ns: str) -> str | None:
    """The P95 (ms) column of `kubectl get md`, when it shows what status says (the autoscaler may
    write between the two reads, so a mismatch is read again)."""
    table = cluster.kubectl("get", "md", NAME, "-n", ns).stdout
    latency = status_of(cluster, ns, NAME).get("latencyP95Ms")
    shown = None if latency is None else str(latency).rstrip("0").rstrip(".")
    return shown if shown is not None and shown in table.split() else None


def deployment_replicas(cluster: ControlPlane, namespace: str) -> int:
    deployment = get(cluster, "deployment", namespace, f"{NAME}-g1-shard-0")
    return int(deployment["spec"]["replicas"]) if deployment else 0


def test_replicas_follow_the_load_through_prometheus_and_hold_when_it_is_gone(live: dict[str, Any]) -> None:
    operator: Operator = live["operator"]
    prometheus: Prometheus = live["prometheus"]
    kubelet: PlayedKubelet = live["kubelet"]
    cluster, ns = operator.cluster, live["namespace"]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=model_deployment(prometheus.url))
    for job in (f"{NAME}-g1-compress", f"{NAME}-g1-profile-local-cpu"):
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), live["work"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    wait_object(cluster, operator, "deployment", ns, f"{NAME}-g1-shard-0")
    assert kubelet.sync() == 1
    wait_for("phase Serving", lambda: status_of(cluster, ns, NAME).get("phase") == "Serving", operator)

    # Load above what one replica answers within 3 ms: the autoscaler raises the count.
    with Load(kubelet) as load:

        def scaled_up() -> bool:
            return kubelet.sync() > 1

        wait_for("a scale-up", scaled_up, operator, timeout_s=120)
        during = wait_for(
            "observed status under load",
            lambda: (s := status_of(cluster, ns, NAME)).get("requestRate") and s.get("latencyP95Ms") and s,
            operator,
        )
        check_alert_rules_live(prometheus, ns)
        check_dashboard_live(prometheus)
        p95_column = wait_for("the P95 (ms) column showing status.latencyP95Ms", lambda: p95_shown(cluster, ns),
                              operator)  # fmt: skip
        # Let the count settle under load (at most maxReplicas): a stabilisation window of the
        # operator's 2 s ticks, each followed by starting what it asked for, so the next one sees it.
        for _ in range(WINDOW_S // 2 + 1):
            wait_ticks(operator, 1)
            kubelet.sync()
        peak = kubelet.sync()
        # Prometheus stops together with the load: the count must hold, however long it is gone.
        prometheus.stop()
    assert load.codes.get(200, 0) > 100 and set(load.codes) == {200}, load.codes
    assert 2 <= peak <= 3
    scaled = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "ScaledUp"]
    assert scaled and any(reason in e["message"] for e in scaled for reason in SCALE_UP), scaled
    assert condition(during, "MetricsAvailable")["status"] == "True"
    assert during["latencyP95Ms"] > 3 and during["requestRate"] > 10
    assert float(during["cost"]["perHour"]) > 0 and during["energy"]["watts"] > 0
    assert float(during["cost"]["per1kRequests"]) > 0 and during["energy"]["joulesPerRequest"] > 0
    assert during["autoscaling"]["capacityRps"][0] > 0
    # Hardware selection again at the observed load: every option priced, the running one marked.
    at_load = during["planAtLoad"]
    assert at_load["loadRps"] > 10 and at_load["cheapest"]["hardwareProfile"] == "local-cpu"
    [running] = [row for row in at_load["options"] if row["running"]]
    assert running["replicas"] >= 1 and float(running["costPer1kRequests"]) > 0 and running["feasible"]
    assert float(p95_column) > 3

    stale = wait_for(
        "MetricsAvailable=False",
        lambda: (
            (s := status_of(cluster, ns, NAME))
            and condition(s, "MetricsAvailable").get("status") == "False"
            and s
        ),
        operator,
    )
    assert prometheus.url in condition(stale, "MetricsAvailable")["message"]
    assert stale["autoscaling"]["reason"] == "MetricsStale"
    wait_ticks(operator, WINDOW_S // 2 + 2)  # 2 s ticks past the window: with no metrics nothing scales down
    assert deployment_replicas(cluster, ns) == peak
    assert any(
        e["reason"] == "MetricsStale" and e["type"] == "Warning" for e in events_for(cluster, ns, NAME)
    )

    # Metrics back, no load: down to the minimum after the window, in steps.
    prometheus.start()
    wait_for("a scale-down to 1", lambda: kubelet.sync() == 1, operator, timeout_s=90)
    after = wait_for(
        "MetricsAvailable=True",
        lambda: (
            (s := status_of(cluster, ns, NAME))
            and condition(s, "MetricsAvailable").get("status") == "True"
            and s
        ),
        operator,
    )
    assert after["autoscaling"]["desiredReplicas"] == [1]
    down = [e for e in events_for(cluster, ns, NAME) if e["reason"] == "ScaledDown"]
    assert down and all("Headroom" in e["message"] for e in down), down
    deployment = kubectl_json(
        cluster, "get", "deployment", f"{NAME}-g1-shard-0", "-n", ns, "--show-managed-fields"
    )
    owners = {
        m["manager"]
        for m in deployment["metadata"]["managedFields"]
        if m.get("operation") == "Apply" and "f:replicas" in m["fieldsV1"].get("f:spec", {})
    }
    assert owners == {"frugal-autoscaler"}


def test_an_autoscaling_only_edit_does_not_compress_again(live: dict[str, Any]) -> None:
    operator: Operator = live["operator"]
    cluster, ns = operator.cluster, live["namespace"]
    assert status_of(cluster, ns, NAME).get("phase") == "Serving"
    cluster.kubectl("patch", "md", NAME, "-n", ns, "--type=merge", "-p",
                    '{"spec": {"autoscaling": {"maxReplicas": 2}}}')  # fmt: skip
    wait_for(
        "the edit observed", lambda: status_of(cluster, ns, NAME).get("observedGeneration") == 2, operator
    )
    status = status_of(cluster, ns, NAME)
    assert status["phase"] == "Serving" and status["artifacts"]["generation"] == 1
    jobs = {j["metadata"]["name"] for j in kubectl_json(cluster, "get", "jobs", "-n", ns)["items"]}
    assert not any("-g2-" in name for name in jobs), jobs
    deployments = {
        d["metadata"]["name"] for d in kubectl_json(cluster, "get", "deployments", "-n", ns)["items"]
    }
    assert deployments == {f"{NAME}-g1-shard-0"}
