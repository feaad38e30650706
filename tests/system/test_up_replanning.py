"""`frugal up` re-plans at the observed load and rolls over without failing a request.

Two local HardwareProfiles whose prices cross: ``hot`` is cheap per hour but draws a great deal of
power under load, ``cool`` costs more per hour and draws little. Priced at saturation (the deploy-time
plan) ``cool`` wins; at a trickle of requests ``hot`` is cheaper per request; at a load that keeps
a replica a few percent busy ``cool`` is again. This machine stands in for both profiles, so their
measured capacities are alike: the prices make the difference, as they would between a CPU pool and
a GPU pool.

The run, in this process (LocalCluster and the local autoscaler: the operator's reconciler and
autoscaler over the in-memory store, what `frugal up` runs):

1. a trickle of requests → the run moves from ``cool`` to ``hot``;
2. the load rises → it moves back to ``cool``, with every request of both switches answered;
3. the load stops → every shard goes to zero replicas after ``scaleToZeroAfterSeconds``;
4. the next request is held by the front, wakes the model and is answered; its wait is reported.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.control.scaler import Autoscaler
from frugal.operator.decision import scaling
from frugal.operator.decision.autoscaling import ScaleReason
from frugal.operator.local import evaluation, loadgen
from frugal.operator.local.autoscaler import LocalAutoscaler, for_served
from frugal.operator.local.local_cluster import LocalCluster, Served
from frugal.operator.manifests import names

ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 4
WINDOW_S = 2
HOT, COOL = "hot", "cool"


def profile(name: str, cost_per_hour: str, idle_watts: float, max_watts: float) -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "HardwareProfile",
        "metadata": {"name": name, "namespace": "default", "generation": 1, "uid": "local"},
        "spec": {
            "accelerator": {"kind": "cpu", "model": "x86-64", "count": 1},
            "resources": {
                "requests": {"cpu": "500m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "executionProvider": "CPUExecutionProvider",
            "costPerHour": cost_per_hour,
            "power": {"idleWatts": idle_watts, "maxWatts": max_watts},
        },
    }


def documents() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    md = next(yaml.safe_load_all((ROOT / "examples" / "digits.yaml").read_text()))
    md["metadata"].update(namespace="default", generation=1, uid="local")
    md["spec"]["serving"]["hardwareProfiles"] = [COOL, HOT]
    md["spec"]["autoscaling"] = {
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleToZeroAfterSeconds": IDLE_S,
        "stabilizationWindowSeconds": 2,
        "power": {"pricePerKWh": "1"},
        "replanning": {"windowSeconds": WINDOW_S},
    }
    return md, [profile(HOT, "0.05", 1, 20000), profile(COOL, "0.12", 20, 21)]


@dataclass
class Load:
    """Open-loop load at a rate the test sets, on a thread, until stopped."""

    url: str
    bodies: Callable[[int], Any]
    rate: float = 0.0
    stats: loadgen.LoadStats = field(default_factory=loadgen.LoadStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            asyncio.run(loadgen.run_open_loop(self.url, self.bodies, lambda _: self.rate, 1.0, self.stats))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


@dataclass
class Run:
    served: Served
    scaler: LocalAutoscaler
    load: Load
    lines: list[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    md_body, profile_bodies = documents()
    md = parse_model_deployment(md_body)
    profiles = {body["metadata"]["name"]: parse_hardware_profile(body) for body in profile_bodies}
    lines: list[str] = []
    cluster = LocalCluster(md, profiles, tmp_path_factory.mktemp("replan"), report=lines.append)
    served = cluster.run()
    scaler = for_served(served, 0.5, lines.append)
    model = evaluation.ServedModel.load(served)
    load = Load(f"{served.endpoint}/v2/models/{served.model_name}/infer", evaluation.request_bodies(model))
    scaler.start()
    load.start()
    try:
        yield Run(served, scaler, load, lines)
    finally:
        load.stop()
        scaler.stop()
        served.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, lines: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; log:\n" + "\n".join(lines[-30:]))


def capacity(served: Served) -> float:
    """One replica's profiled throughput (the profiles' are alike: one machine stands in for both)."""
    plan = served.decision.plan
    assert plan is not None
    return min(row.throughput_rps or 0.0 for row in plan.table if row.feasible)


def cheapest_at(served: Served, rate: float) -> str:
    md_body, profile_bodies = documents()
    md = parse_model_deployment(md_body)
    profiles = {body["metadata"]["name"]: parse_hardware_profile(body) for body in profile_bodies}
    plan = scaling.plan_at_load(md, served.decision.status, profiles, rate)
    assert plan is not None and plan.chosen is not None
    return plan.chosen.profile


def test_the_choice_follows_the_load_and_no_request_fails(run: Run) -> None:
    served, scaler, load = run.served, run.scaler, run.load
    assert served.decision.selection is not None and served.decision.selection.profile == COOL
    trickle = max(2.0, capacity(served) * 0.0005)
    busy = min(400.0, max(30.0, capacity(served) * 0.03))
    # The premise, from the planner itself at the measured capacities.
    assert cheapest_at(served, trickle) == HOT and cheapest_at(served, busy) == COOL

    load.rate = trickle
    wait_until(
        lambda: len(scaler.rollovers) >= 1, 60, f"a rollover to {HOT} at {trickle:.1f} req/s", run.lines
    )
    first = scaler.rollovers[0]
    assert HOT in first.to_option and COOL in first.from_option and first.reason == "Cheaper"
    assert first.to_cost_per_1k is not None and first.from_cost_per_1k is not None
    assert first.from_cost_per_1k > 1.1 * first.to_cost_per_1k
    assert served.decision.selection is not None and served.decision.selection.profile == HOT
    assert all("-r1-" in shard.name for shard in served.shards)

    load.rate = busy
    wait_until(
        lambda: len(scaler.rollovers) >= 2, 60, f"a rollover back to {COOL} at {busy:.0f} req/s", run.lines
    )
    second = scaler.rollovers[1]
    assert COOL in second.to_option and HOT in second.from_option
    assert served.decision.selection is not None and served.decision.selection.profile == COOL
    assert all("-r2-" in shard.name for shard in served.shards)
    # Both switches happened under load: every request sent was answered, none refused or dropped,
    # and the new option answers what follows.
    after_switch = load.stats.requests
    wait_until(lambda: load.stats.requests > after_switch + busy, 30, "requests served by cool", run.lines)
    assert load.stats.failed == 0, load.stats.status_counts
    # The options served before are stopped, not left running beside the new one.
    old = [replica for shards in served.retired for shard in shards for replica in shard.replicas]
    assert old and all(not shard.active() for shards in served.retired for shard in shards)
    wait_until(lambda: all(r.stopped_at is not None for r in old), 30, "the old replicas to stop", run.lines)


def test_the_operators_own_reconciler_and_autoscaler_did_it(run: Run) -> None:
    """The run's status, Events and replica counts were written by the operator's classes into the
    store, as they are into the API server in a cluster: frugal up has no loop of its own."""
    served, scaler = run.served, run.scaler
    cluster = served.cluster
    assert type(cluster.reconciler) is Reconciler and type(scaler.autoscaler) is Autoscaler
    body = cluster.store.get("frugal.dev/v1alpha1", "ModelDeployment", "default", "digits")
    assert body is not None
    status = ModelDeploymentStatus.from_body(body)
    assert status.phase == "Serving" and status.replan is not None and status.replan.revision == 2
    assert status.selected is not None and status.selected.hardware_profile == COOL
    replanned = status.condition("Replanned")
    assert replanned is not None and replanned.status == "True"
    reasons = [e["reason"] for e in cluster.store.find("v1", "Event", "default", {})]
    # The reconciler's phase Events and the autoscaler's re-planning Events.
    assert {"PhaseCompressing", "PhaseProfiling", "PhaseServing"} <= set(reasons), reasons
    assert reasons.count("Replanned") >= len(scaler.rollovers) == 2
    # One revision left, the one the endpoint routes to; the runner wrote its readiness back.
    [shard] = cluster.store.find("apps/v1", "Deployment", "default", {names.LABEL_ROLE: "serving"})
    assert shard["metadata"]["name"] == served.shards[0].name and "-r2-" in shard["metadata"]["name"]
    assert shard["status"]["readyReplicas"] >= 1


def test_idle_scales_to_zero_and_the_next_request_is_answered(run: Run) -> None:
    served, scaler, load = run.served, run.scaler, run.load
    load.stop()
    wait_until(lambda: not served.shards[0].active(), IDLE_S + 20, "scale to zero", run.lines)
    idle = scaler.events[-1]
    assert idle.reason == ScaleReason.IDLE.value and set(idle.replicas) == {0}
    rollovers_before = len(scaler.rollovers)

    body = json.dumps(next(iter(load.bodies(0)))).encode()
    request = urllib.request.Request(load.url, body, {"Content-Type": "application/json"}, method="POST")
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=90) as response:
        assert response.status == 200 and json.loads(response.read())["outputs"]
    waited = time.monotonic() - started
    waits = served.wake_waits()
    assert waits and 0 < waits[-1] <= waited
    summary = scaler.finish()
    assert summary["wakeWaitsMs"][-1] > 0
    assert [e["to"] for e in summary["rollovers"]][:2] == [r.to_option for r in scaler.rollovers[:2]]
    # No load to price at while idle: re-planning holds, it does not move the model to zero's option.
    assert len(scaler.rollovers) == rollovers_before
    assert summary["costUsd"] > 0 and summary["energyJoules"] > 0
