"""Dynamic batching, back-pressure, deadlines and graceful shutdown of a real `frugal serve` process.

Real parts: the server subprocess and ONNX Runtime running a deliberately slow model (a Loop of matrix
products that returns its input), so requests stay in flight long enough to queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_support import (
    Reply,
    Server,
    http,
    infer_json,
    metric_value,
    running_server,
    slow_model,
    write_artifacts,
)

MODEL = "slow"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(
        tmp_path_factory.mktemp("slow"), MODEL, {"fp32": slow_model(iterations=4000, width=512)}
    )


def rows(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 4), dtype=np.float32)


def fire(url: str, count: int, pool: ThreadPoolExecutor) -> list[tuple[np.ndarray, Future[Reply]]]:
    jobs: list[tuple[np.ndarray, Future[Reply]]] = []
    for i in range(count):
        x = rows(i)
        jobs.append((x, pool.submit(infer_json, url, MODEL, {"input": x})))
    return jobs


def output_of(reply: Reply) -> np.ndarray:
    out = reply.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    with running_server(artifacts, "fp32", "--max-batch-size", "32") as running:
        yield running


def test_concurrent_requests_are_merged_into_batches(server: Server) -> None:
    with ThreadPoolExecutor(16) as pool:
        jobs = fire(server.url, 16, pool)
        replies = [(x, job.result()) for x, job in jobs]
    for x, reply in replies:
        assert reply.status == 200
        np.testing.assert_allclose(output_of(reply), x, rtol=1e-6)  # each request got its own rows back
    text = http("GET", f"{server.url}/metrics").body.decode()
    batches = metric_value(text, "frugal_batch_size_count")
    merged = metric_value(text, "frugal_batch_size_sum")
    assert merged >= 16 and batches < merged, (batches, merged)
    assert metric_value(text, "frugal_batch_size_bucket", le="1.0") < batches


def test_a_full_queue_answers_429_with_retry_after(artifacts: Path) -> None:
    with (
        running_server(artifacts, "fp32", "--max-batch-size", "1", "--max-queue-size", "2") as srv,
        ThreadPoolExecutor(10) as pool,
    ):
        replies = [job.result() for _, job in fire(srv.url, 10, pool)]
        text = http("GET", f"{srv.url}/metrics").body.decode()
    refused = [r for r in replies if r.status == 429]
    assert refused and all(r.headers.get("Retry-After") == "1" for r in refused)
    assert "queue is full" in refused[0].json()["error"]
    assert {r.status for r in replies} == {200, 429}
    assert metric_value(text, "frugal_requests_total", code="429") == len(refused)


def a_tenth_of_one_request_ms(server: Server) -> int:
    """A deadline the slow model cannot meet on this machine, whatever its speed: a tenth of what one
    request measurably takes here (whole milliseconds, at least 1)."""
    infer_json(server.url, MODEL, {"input": rows(0)})  # warm
    started = time.monotonic()
    assert infer_json(server.url, MODEL, {"input": rows(0)}).status == 200
    return max(1, int((time.monotonic() - started) * 1000 / 10))


def test_a_request_past_its_deadline_gets_504(artifacts: Path, server: Server) -> None:
    deadline_ms = a_tenth_of_one_request_ms(server)
    with running_server(artifacts, "fp32", "--request-timeout-ms", str(deadline_ms)) as srv:
        reply = infer_json(srv.url, MODEL, {"input": rows(0)})
        assert http("GET", f"{srv.url}/v2/health/live").status == 200
    assert reply.status == 504 and f"deadline of {deadline_ms} ms" in reply.json()["error"]


def test_a_request_can_shorten_its_own_deadline(server: Server) -> None:
    deadline_ms = a_tenth_of_one_request_ms(server)
    reply = infer_json(server.url, MODEL, {"input": rows(1)}, parameters={"timeout": deadline_ms * 1000})
    assert reply.status == 504 and f"deadline of {deadline_ms} ms" in reply.json()["error"]
    bad = infer_json(server.url, MODEL, {"input": rows(1)}, parameters={"timeout": "soon"})
    assert bad.status == 400 and "parameters.timeout" in bad.json()["error"]


def test_sigterm_under_load_finishes_every_accepted_request(artifacts: Path) -> None:
    with (
        running_server(artifacts, "fp32", "--max-batch-size", "4", "--shutdown-grace-s", "1") as srv,
        ThreadPoolExecutor(24) as pool,
    ):
        jobs = fire(srv.url, 12, pool)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until all 12 are inside the server
            text = http("GET", f"{srv.url}/metrics").body.decode()
            if metric_value(text, "frugal_inflight_requests") >= 12:
                break
            time.sleep(0.02)
        srv.process.send_signal(15)
        time.sleep(0.2)
        assert http("GET", f"{srv.url}/v2/health/ready").status == 503  # unready, still listening
        late = fire(srv.url, 4, pool)  # arrive during the grace period: still served
        replies = [(x, job.result()) for x, job in [*jobs, *late]]
        assert srv.process.wait(60) == 0
    for x, reply in replies:
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(output_of(reply), x, rtol=1e-6)
    assert "stopped cleanly" in srv.stderr()
