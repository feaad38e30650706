"""`frugal front`, the always-on front of a model at zero: it holds a request while its upstream refuses
connections, forwards it once a replica listens, and answers 503 with Retry-After past its bound or
deadline; whatever the replica answers (4xx included) comes back unchanged.

Real parts: `frugal front` and `frugal serve` subprocesses on 127.0.0.1, ONNX Runtime on a small MLP.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from serving_support import http, infer_json, metric_value, mlp, running_server, write_artifacts

MODEL = "digits"
_LISTENING = re.compile(r"on (http://[\d.]+:\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_front(upstream: str, *extra: str) -> Iterator[str]:
    command = [sys.executable, "-m", "frugal.serving.front", "--upstream", upstream, "--model-name", MODEL,
               "--namespace", "ns1", "--port", "0", "--retry-interval-ms", "50", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _LISTENING.search(line)
    assert match, f"front did not start: {line}{process.stdout.read() if process.poll() is not None else ''}"
    try:
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("front") / "artifacts", MODEL, {"fp32": mlp()})


def rows(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, 64), dtype=np.float32)


def held(front: str) -> float:
    return metric_value(http("GET", f"{front}/metrics").body.decode(), "frugal_front_held_requests",
                        namespace="ns1", model=MODEL)  # fmt: skip


def test_a_request_at_zero_is_held_until_a_replica_listens_and_then_answered(artifacts: Path) -> None:
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    with running_front(upstream) as front:
        assert http("GET", f"{front}/v2/health/ready").status == 200
        answers: list[object] = []
        client = threading.Thread(target=lambda: answers.append(infer_json(front, MODEL, {"input": rows()})))
        client.start()
        deadline = time.monotonic() + 10
        while held(front) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held(front) == 1  # the demand the autoscaler reads
        seen_held = time.monotonic()
        assert client.is_alive() and not answers  # held, not refused
        with running_server(artifacts, "fp32", "--port", str(port), "--model-name", MODEL) as server:
            listening = time.monotonic()  # running_server returns once the server says it is ready
            client.join(60)
            assert not client.is_alive()
            reply = answers[0]
            direct = infer_json(server.url, MODEL, {"input": rows()})
        assert reply.status == 200, reply.body  # type: ignore[attr-defined]
        assert reply.json()["outputs"] == direct.json()["outputs"]  # type: ignore[attr-defined]
        metrics = http("GET", f"{front}/metrics").body.decode()
        assert held(front) == 0
        assert metric_value(metrics, "frugal_front_hold_duration_seconds_count", model=MODEL) == 1
        # it waited at least from when it was seen held until a replica listened
        assert (
            metric_value(metrics, "frugal_front_hold_duration_seconds_sum", model=MODEL)
            >= listening - seen_held
        )
        assert metric_value(metrics, "frugal_front_requests_total", model=MODEL, code="200") == 1


def test_a_connect_that_times_out_is_held_like_a_refused_one(artifacts: Path) -> None:
    """An upstream that drops the SYN (a Service whose new endpoint is not yet programmed on the node):
    the front's connect times out, which reached no replica, so the request stays held — not a 504."""
    port = free_port()
    clogged = socket.socket()
    clogged.bind(("127.0.0.1", port))
    clogged.listen(0)  # never accepts: once its queue is full, the kernel drops further SYNs
    fillers = [socket.create_connection(("127.0.0.1", port), timeout=5)]  # fills a queue of one
    with running_front(f"http://127.0.0.1:{port}") as front:
        answers: list[object] = []
        client = threading.Thread(target=lambda: answers.append(infer_json(front, MODEL, {"input": rows()})))
        client.start()
        time.sleep(5)  # two connect timeouts of 2 s each
        assert held(front) == 1 and client.is_alive() and not answers
        for sock in (*fillers, clogged):
            sock.close()
        with running_server(artifacts, "fp32", "--port", str(port), "--model-name", MODEL):
            client.join(60)
        assert answers and answers[0].status == 200, answers  # type: ignore[attr-defined]


def test_a_replica_that_answers_is_passed_through_unchanged_even_when_it_says_no(artifacts: Path) -> None:
    with (
        running_server(artifacts, "fp32", "--model-name", MODEL) as server,
        running_front(server.url) as front,
    ):
        assert (
            infer_json(front, MODEL, {"input": rows(3)}).json()
            == infer_json(server.url, MODEL, {"input": rows(3)}).json()
        )
        bad = http(
            "POST", f"{front}/v2/models/{MODEL}/infer", b"{not json", {"Content-Type": "application/json"}
        )
        direct = http(
            "POST",
            f"{server.url}/v2/models/{MODEL}/infer",
            b"{not json",
            {"Content-Type": "application/json"},
        )
        assert bad.status == direct.status == 400
        assert bad.json() == direct.json()
        assert http("GET", f"{front}/v2/models/{MODEL}").json()["name"] == MODEL
        assert held(front) == 0


def test_past_the_deadline_or_the_bound_the_answer_is_503_with_retry_after() -> None:
    upstream = f"http://127.0.0.1:{free_port()}"  # nothing will ever listen there
    with running_front(upstream, "--hold-deadline-s", "1.5", "--hold-max-requests", "1") as front:
        first: list[object] = []
        started = time.monotonic()
        client = threading.Thread(target=lambda: first.append(infer_json(front, MODEL, {"input": rows()})))
        client.start()
        deadline = time.monotonic() + 5
        while held(front) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = infer_json(front, MODEL, {"input": rows()})  # the bound: refused at once
        assert second.status == 503 and second.headers.get("Retry-After")
        assert "already wait" in second.json()["error"]
        client.join(10)
        waited = time.monotonic() - started
        reply = first[0]
        assert reply.status == 503 and reply.headers.get("Retry-After")  # type: ignore[attr-defined]
        assert "within 1.5s" in reply.json()["error"]  # type: ignore[attr-defined]
        assert 1.4 <= waited < 8
        metrics = http("GET", f"{front}/metrics").body.decode()
        assert metric_value(metrics, "frugal_front_requests_total", model=MODEL, code="503") == 2


def test_bad_settings_exit_2_naming_the_flag() -> None:
    for extra, flag in ((["--model-name", MODEL], "--upstream"), (["--upstream", "http://x", "--model-name", MODEL,
                        "--hold-max-requests", "0"], "--hold-max-requests")):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "frugal.serving.front", *extra], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and flag in proc.stderr, proc.stderr
