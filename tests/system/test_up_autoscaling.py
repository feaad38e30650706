"""`frugal up` autoscaling: replicas follow an open-loop load ramp, with the operator's own policy.

The digits model is tiny: the profiled capacity (about 5000 req/s, the runtime plus a guessed HTTP
cost) says one replica carries any load this machine's load generator can send, so what honestly
puts the ramp's peak above one replica is contention within the SLO. The SLO is tight (1.5 ms,
with 0.2 ms of batching delay so the plan still accepts int8) and the peak high enough (1500 req/s)
that requests queue on one replica: its p95 leaves the SLO while more than half a request is in
flight per replica, and the policy adds replicas (latency above the SLO, or load above the capacity
it has refined from what the replica really served). A gentler peak was tried: at 300 req/s a fast
machine keeps one replica below half a request in flight, where a slow p95 is HTTP overhead that
more replicas would not cure, and the policy rightly holds. The quiet tail then outlasts the 10 s
stabilisation window and the count comes back to 1. Every request goes through the shard's balancer
while replicas join and leave, and none may fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from frugal.operator.decision.autoscaling import SCALE_UP_REASONS, ScaleReason

ROOT = Path(__file__).resolve().parents[2]
DURATION = 70
PEAK_RPS = 1500
# The ramp: up over the first 30% of the run, held 30%, down 10%, quiet for the last 30%.
RAMP_ACTIVE_END = 0.7 * DURATION


def frugal(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugal.operator.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def autoscaled_digits(path: Path) -> Path:
    documents = (ROOT / "examples" / "digits.yaml").read_text().split("\n---\n")
    model = (
        documents[0]
        .replace("latencyP95Ms: 50", "latencyP95Ms: 1.5")
        .replace("maxDelayMs: 2\n", "maxDelayMs: 0.2\n")
        .replace("maxReplicas: 4", "maxReplicas: 3\n    stabilizationWindowSeconds: 10")
    )
    assert "latencyP95Ms: 1.5\n" in model and "maxDelayMs: 0.2\n" in model
    assert "stabilizationWindowSeconds: 10" in model
    path.write_text("\n---\n".join([model, *documents[1:]]))
    return path


@pytest.fixture(scope="module")
def ramp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    directory = tmp_path_factory.mktemp("up-autoscaling")
    manifest = autoscaled_digits(directory / "digits-autoscaled.yaml")
    workdir = directory / "run"
    result = frugal(
        "up",
        str(manifest),
        "--for",
        str(DURATION),
        "--load",
        "ramp",
        "--rps",
        str(PEAK_RPS),
        "--scale-interval",
        "2",
        "--workdir",
        str(workdir),
    )
    return result, workdir


def summary_file(workdir: Path) -> dict[str, Any]:
    [path] = list((workdir / "artifacts").glob("*/digits/summary.json"))
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


def test_replicas_follow_the_ramp_up_and_back_down(
    ramp_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = ramp_run
    assert result.returncode == 0, result.stderr[-4000:]
    summary = summary_file(workdir)
    events = summary["scaleEvents"]
    context = f"events: {json.dumps(events, indent=1)}\nstderr:\n{result.stderr[-2000:]}"
    assert summary["load"] == "ramp"
    assert summary["peakReplicas"][0] > 1, context
    rises = [e for e in events if e["replicas"][0] > 1 and e["t"] < RAMP_ACTIVE_END]
    assert rises, context
    assert rises[0]["reason"] in {r.value for r in SCALE_UP_REASONS}, context
    assert summary["finalReplicas"] == [1], context
    assert events[-1]["replicas"] == [1] and events[-1]["t"] > rises[0]["t"], context
    assert events[-1]["reason"] == ScaleReason.HEADROOM.value, context
    # More than one replica ran for a while, and the account says what it cost.
    assert summary["replicaSeconds"][0] > DURATION * 1.1, context
    assert summary["energyJoules"] > 0 and summary["costUsd"] > 0
    assert 0.0 <= summary["sloAttainment"] <= 1.0 and summary["sloLatencyP95Ms"] == 1.5


def test_no_request_fails_while_replicas_come_and_go(
    ramp_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = ramp_run
    assert result.returncode == 0, result.stderr[-4000:]
    summary = summary_file(workdir)
    assert summary["requestsServed"] > PEAK_RPS * DURATION * 0.2
    assert summary["requestsFailed"] == 0, summary["statusCounts"]
    assert set(summary["statusCounts"]) == {"200"}, summary["statusCounts"]
    # The JSON line on stdout is the same summary.
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert json.loads(lines[-1]) == summary
    # Every replica the autoscaler started logged its own output beside the first one's.
    logs = sorted(p.name for p in (workdir / "logs").glob("digits-g1-shard-0-*.log"))
    assert len(logs) >= summary["peakReplicas"][0], logs


def test_the_status_line_and_log_name_every_scale_change(
    ramp_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = ramp_run
    summary = summary_file(workdir)
    changes = [line for line in result.stderr.splitlines() if "autoscaler: t=" in line]
    assert len(changes) >= len(summary["scaleEvents"]) > 0
    assert "replicas=" in result.stderr and "target=" in result.stderr


# -- the balancer on its own, with real replicas of the run's artifacts -------------------------------


def test_the_balancer_passes_errors_through_answers_503_empty_and_drains_before_stopping(
    ramp_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from frugal.operator.local import processes
    from frugal.operator.local.balancer import BalancerHost
    from frugal.operator.local.replicas import ReplicaTemplate, Shard

    _, workdir = ramp_run
    [artifacts] = list((workdir / "artifacts").glob("*/digits/gen-1"))
    argv = processes.local_argv(
        [
            "frugal",
            "serve",
            "--artifacts",
            str(artifacts),
            "--variant",
            "int8-dynamic",
            "--model-name",
            "digits",
        ]
    )
    env = processes.local_env({"env": [{"name": "FRUGAL_SHUTDOWN_GRACE_S", "value": "1"}]}, "default")
    host = BalancerHost()
    lines: list[str] = []
    shard = Shard(
        0,
        ReplicaTemplate("check", tuple(argv), env, workdir / "logs"),
        host.start("check"),
        host,
        lines.append,
    )
    infer = f"{shard.url}/v2/models/digits/infer"
    try:
        status, body = _post(infer, b"{}")
        assert status == 503 and "no replica is ready" in json.loads(body)["error"]

        shard.scale_to(2)
        _wait(lambda: len(shard.ready()) == 2)
        status, body = _post(infer, b"not json")  # the replica's 400 comes back as it is
        assert status == 400 and "not valid JSON" in json.loads(body)["error"]
        status, body = _post(f"{shard.url}/v2/models/nope/infer", b"{}")
        assert status == 404
        good = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
        ).encode()
        status, body = _post(infer, good)
        assert status == 200, body

        # Scale down while clients keep sending: the retired replica leaves the pool first.
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                statuses.append(_post(infer, good)[0])

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        shard.scale_to(1)
        _wait(lambda: sum(1 for r in shard.replicas if r.stopped_at is not None) == 1, timeout=30)
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join()
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert len(shard.ready()) == 1
    finally:
        for thread in shard.close():
            thread.join()
        host.close()


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
