"""`frugal up` with minReplicas 0: no requests for scaleToZeroAfterSeconds → no replica at all; the
next request is held by the shard's front, wakes the model, and is answered; its wait is recorded.

The pipeline runs in this process (LocalCluster and the local autoscaler, what `frugal up` runs), so
the test can watch the replicas directly. The front's hold is bounded and has a deadline: past
either a request gets 503 with Retry-After, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
from frugal.operator.decision.autoscaling import ScaleReason
from frugal.operator.local.autoscaler import LocalAutoscaler, for_served
from frugal.operator.local.balancer import Balancer, Hold
from frugal.operator.local.local_cluster import LocalCluster, Served

ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 3
REQUEST = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
).encode()


def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    md, profile = yaml.safe_load_all((ROOT / "examples" / "digits.yaml").read_text())
    md["spec"]["autoscaling"] = {
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleToZeroAfterSeconds": IDLE_S,
        "stabilizationWindowSeconds": 2,
    }
    for body in (md, profile):
        body["metadata"].update(namespace="default", generation=1, uid="local")
    return md, profile


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, LocalAutoscaler]]:
    md_body, profile_body = documents()
    md = parse_model_deployment(md_body)
    profiles = {"local-cpu": parse_hardware_profile(profile_body)}
    lines: list[str] = []
    served = LocalCluster(md, profiles, tmp_path_factory.mktemp("zero"), report=lines.append).run()
    scaler = for_served(served, interval=0.5, report=lines.append)
    scaler.start()
    try:
        yield served, scaler
    finally:
        scaler.stop()
        served.stop()


def post(url: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    request = urllib.request.Request(url, REQUEST, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, json.loads(response.read()), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), time.monotonic() - started


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_idle_scales_to_zero_and_the_next_request_wakes_it(sleepy: tuple[Served, LocalAutoscaler]) -> None:
    served, scaler = sleepy
    url = f"{served.endpoint}/v2/models/{served.model_name}/infer"
    assert post(url)[0] == 200
    wait_until(lambda: not served.shards[0].active(), timeout=IDLE_S + 15)
    idle = scaler.events[-1]
    assert idle.replicas == (0,) and idle.reason == ScaleReason.IDLE.value
    assert f"no requests for {IDLE_S}" in idle.message or "no requests for" in idle.message

    code, body, waited = post(url)
    assert code == 200 and body["outputs"][0]["shape"] == [1, 10]
    assert scaler.events[-1].reason == ScaleReason.WAKING.value and scaler.events[-1].replicas == (1,)
    assert len(served.wake_waits()) == 1 and 0 < served.wake_waits()[0] <= waited
    assert scaler.finish()["wakeWaitsMs"][0] > 0


def test_the_hold_is_bounded_and_has_a_deadline() -> None:
    async def scenario() -> list[tuple[int, str | None, float]]:
        balancer = Balancer("shard-0", Hold(max_requests=1, deadline_s=0.5))
        url = await balancer.start()
        try:
            async with aiohttp.ClientSession() as session:

                async def call() -> tuple[int, str | None, float]:
                    started = time.monotonic()
                    async with session.post(f"{url}/v2/models/m/infer", data=REQUEST) as answer:
                        await answer.read()
                        return answer.status, answer.headers.get("Retry-After"), time.monotonic() - started

                first = asyncio.create_task(call())
                await asyncio.sleep(0.1)  # the first one is held
                second = await call()
                return [await first, second]
        finally:
            await balancer.close()

    (held, held_retry, held_s), (over, over_retry, over_s) = asyncio.run(scenario())
    assert held == 503 and held_retry and 0.4 <= held_s < 5  # waited out its deadline, then 503
    assert over == 503 and over_retry and over_s < 0.4  # the bound was reached: refused at once


def test_a_client_that_hangs_up_while_held_frees_its_place_at_once() -> None:
    """Defect class: abandoned held requests. A client gone while held must not keep a place in the
    bound (the next request would be refused) nor count as demand."""

    async def scenario() -> tuple[int, int, int, float]:
        balancer = Balancer("shard-0", Hold(max_requests=1, deadline_s=2.0))
        url = await balancer.start()
        try:
            async with aiohttp.ClientSession() as session:
                gone = asyncio.create_task(session.post(f"{url}/v2/models/m/infer", data=REQUEST))
                held_before = await until(lambda: balancer.held == 1, balancer)
                gone.cancel()  # the client hangs up
                await asyncio.gather(gone, return_exceptions=True)
                held_after = await until(lambda: balancer.held == 0, balancer)
                started = time.monotonic()
                async with session.post(f"{url}/v2/models/m/infer", data=REQUEST) as answer:
                    await answer.read()
                    return held_before, held_after, answer.status, time.monotonic() - started
        finally:
            await balancer.close()

    held_before, held_after, status, waited = asyncio.run(scenario())
    assert held_before == 1 and held_after == 0
    # Held in turn (the place was free) until its own deadline, not refused at once for a ghost.
    assert status == 503 and waited >= 1.5


async def until(condition: Any, balancer: Balancer, timeout: float = 1.5) -> int:
    """Yield to the balancer until `condition` holds (or `timeout`); the held count then."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return balancer.held
