"""`frugal front` against hostile or careless clients: an adversarial corpus, each case naming the
defect class it guards.

- body limit and memory bound: the front buffers at most the model's own body limit (as `frugal serve`
  derives it), and keeps at most its hold bound of requests at once, counted before their body is read,
  so hold bound x body limit fits the memory limit the operator gives its pod;
- abandoned held requests: a client that hangs up while held frees its place at once, leaves the
  held-requests gauge, and is never forwarded at the wake;
- request-target: forwarded byte for byte (no `..` resolved, nothing re-quoted);
- malformed HTTP: the client's fault, logged on one line at DEBUG, never an ERROR with a traceback.

Real parts: `frugal front` and `frugal serve` subprocesses on 127.0.0.1, raw sockets as clients, and an
aiohttp server on a thread as a recording upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from serving_support import http, mlp, running_server, write_artifacts
from test_serving_front import _LISTENING, MODEL, free_port, held

from frugal.operator.api.spec import ModelDeploymentSpec, parse_model_deployment
from frugal.operator.manifests import serving_objects
from frugal.schema.artifact_format import TensorSpec, read_manifest
from frugal.serving import front

MIB = 1024 * 1024


@dataclass
class FrontProcess:
    url: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def vm(self, field_name: str) -> int:
        """A /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1)) * 1024


@contextmanager
def front_process(upstream: str, *extra: str) -> Iterator[FrontProcess]:
    """`frugal front` with its log (stderr) kept apart from its ready line (stdout); the log is complete
    once the context exits (the front stopped cleanly)."""
    command = [sys.executable, "-m", "frugal.serving.front", "--upstream", upstream, "--model-name", MODEL,
               "--namespace", "ns1", "--port", "0", "--retry-interval-ms", "50", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    log: list[str] = []
    stderr = process.stderr
    reader = threading.Thread(target=lambda: log.extend(iter(stderr.readline, "")), daemon=True)
    reader.start()
    match = _LISTENING.search(process.stdout.readline())
    assert match, f"front did not start: {''.join(log)}"
    try:
        yield FrontProcess(match.group(1), process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, "".join(log)
        reader.join(10)


@contextmanager
def recording_upstream(port: int) -> Iterator[list[tuple[str, str, int]]]:
    """An aiohttp server on `port` (a thread of its own) that answers 200 and records each request it
    gets: (its request-target as it arrived, its X-Client header, its body's length)."""
    seen: list[tuple[str, str, int]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.raw_path, request.headers.get("X-Client", ""), len(body)))
        return web.json_response({"target": request.raw_path})

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def exchange(url: str, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send `raw` as it is; (the status, the whole response) once the front closes the connection, or
    (0, what came) when nothing ends it within `timeout`."""
    with connect(url, timeout) as sock:
        # refused before its body was read, the send may break: the answer is still there to read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        chunks: list[bytes] = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            return 0, b"".join(chunks)
    response = b"".join(chunks)
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return (int(match.group(1)) if match else 0), response


def head(target: str, length: int, *headers: str) -> bytes:
    """A POST's request line and headers, for a body of `length` bytes."""
    lines = [f"POST {target} HTTP/1.1", "Host: front", "Connection: close", "Content-Type: application/json",
             f"Content-Length: {length}", *headers]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(target: str, body: bytes, *headers: str) -> bytes:
    return head(target, len(body), *headers) + body


def wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def scale_to_zero_md(**batching: int) -> ModelDeploymentSpec:
    return parse_model_deployment({
        "metadata": {"name": MODEL, "namespace": "ns1", "uid": "u-1", "generation": 1},
        "spec": {"model": {"uri": "zoo://digits-mlp"},
                 "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 50}, "batching": batching},
                 "autoscaling": {"minReplicas": 0}},
    })  # fmt: skip


def front_flags(deployment: dict[str, object]) -> front.FrontConfig:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    command = container["command"]
    assert command[:2] == ["frugal", "front"]
    return front.FrontConfig(**vars(front.build_parser({}).parse_args(command[2:])))


def memory_limit_bytes(deployment: dict[str, object]) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    quantity = container["resources"]["limits"]["memory"]
    match = re.fullmatch(r"(\d+)Mi", quantity)
    assert match, quantity
    return int(match.group(1)) * MIB


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("hardening") / "artifacts", MODEL, {"fp32": mlp()})


# ------------------------------------------------------------------------ body limit and memory bound


def test_the_operator_gives_the_front_the_body_limit_frugal_serve_derives_for_the_model(
    artifacts: Path,
) -> None:
    """Defect class: the front's body limit is its own default (64 MiB), not the model's (1 MiB for
    digits), so it buffers bodies the model would refuse. The operator now passes the served variant's
    limit, derived as `frugal serve` derives it; the front refuses a larger body itself with a 413."""
    md = scale_to_zero_md()
    inputs = read_manifest(artifacts).variant("fp32").inputs
    config = front_flags(serving_objects.desired_front(md, "img", inputs=inputs))
    batch = str(md.max_batch_size)
    with running_server(artifacts, "fp32", "--model-name", MODEL, "--max-batch-size", batch) as server:
        derived = re.search(r"request bodies up to (\d+) bytes \(derived", server.stderr())
        assert derived, server.stderr()
        assert config.max_body_bytes == int(derived.group(1)) == MIB  # digits: the 1 MiB floor
        with front_process(server.url, "--max-body-bytes", str(config.max_body_bytes)) as fronted:
            over = b"x" * (config.max_body_bytes + 1)
            status, response = exchange(fronted.url, post(f"/v2/models/{MODEL}/infer", over))
            assert status == 413 and b"--max-body-bytes (1048576)" in response, response[:300]
            direct = http("POST", f"{server.url}/v2/models/{MODEL}/infer", over)
            assert direct.status == 413  # what the model's server would have said after the trip


@pytest.mark.parametrize(
    ("shape", "max_queue_size"),
    [((-1, 64), 1024), ((-1, 64), 8), ((-1, 4096), 1024), ((-1, 3, 224, 224), 1024)],
    ids=["digits", "digits-short-queue", "wide", "images"],
)
def test_the_fronts_hold_bound_times_its_body_limit_fits_its_pods_memory_limit(
    shape: tuple[int, ...], max_queue_size: int
) -> None:
    """Defect class: unbounded front memory — maxQueueSize (1024 by default) requests of up to 64 MiB
    each under a 256Mi limit, so a handful of large requests OOM-kill the model's only entry point.
    The operator caps the hold bound so hold x 2 x body limit + the process fit the limit (or, when not
    one request fits, grows the limit to hold one), and says so on the front Deployment."""
    md = scale_to_zero_md(maxQueueSize=max_queue_size)
    inputs = (TensorSpec(name="input", datatype="FP32", shape=shape),)
    deployment = serving_objects.desired_front(md, "img", inputs=inputs)
    config, limit = front_flags(deployment), memory_limit_bytes(deployment)
    per_request = serving_objects.BODY_COPIES * config.max_body_bytes
    assert 1 <= config.hold_max_requests <= max_queue_size
    assert serving_objects.FRONT_PROCESS_MEMORY + config.hold_max_requests * per_request <= limit
    if config.hold_max_requests < max_queue_size:  # capped: one more would not have fitted the default
        fits = serving_objects.FRONT_PROCESS_MEMORY + (config.hold_max_requests + 1) * per_request
        assert fits > serving_objects.FRONT_MEMORY_LIMIT
    if limit > serving_objects.FRONT_MEMORY_LIMIT:  # grown only to hold a single request
        assert config.hold_max_requests == 1
    note = deployment["metadata"]["annotations"][serving_objects.FRONT_BOUNDS_ANNOTATION]  # type: ignore[index]
    assert f"at most {config.hold_max_requests} request" in note and str(config.max_body_bytes) in note
    assert f"{limit // MIB}Mi memory limit" in note
    if shape == (-1, 64) and max_queue_size == 1024:
        assert config.hold_max_requests == 96 and limit == 256 * MIB  # digits: 64Mi + 96 x 2 MiB


def test_the_front_counts_a_request_against_its_bound_before_reading_its_body() -> None:
    """Defect class: unbounded front memory — only *held* requests were counted, after their body was
    read, so any number of bodies could be in the front at once. Requests still uploading count too,
    and the one past the bound is refused at once, its body never buffered."""
    upstream = f"http://127.0.0.1:{free_port()}"  # nothing listens: whatever gets in is held
    with front_process(upstream, "--hold-max-requests", "2", "--hold-deadline-s", "30") as fronted:
        slow = [connect(fronted.url) for _ in range(2)]
        for sock in slow:  # the headers and the first bytes of a 1,000,000-byte body, then nothing
            sock.sendall(head(f"/v2/models/{MODEL}/infer", 1_000_000) + b"{" * 1000)
        time.sleep(0.5)
        status, response = exchange(fronted.url, post(f"/v2/models/{MODEL}/infer", b"{}"), timeout=5)
        assert status == 503 and b"already wait" in response, response[:300]
        assert b"Retry-After" in response
        for sock in slow:  # the uploads give up: their places are free at once
            sock.close()
        with connect(fronted.url) as waiting:
            waiting.sendall(post(f"/v2/models/{MODEL}/infer", b"{}"))
            assert wait_until(lambda: held(fronted.url) == 1, 5)


def test_many_large_bodies_at_once_stay_within_hold_bound_times_body_limit_of_memory() -> None:
    """Defect class: unbounded front memory (the OOM kill of the issue), measured: 16 clients send a
    body at the limit at once to a front that keeps 4; its peak resident memory grows by no more than
    4 x 2 x the body limit (and a little for the connections), where it used to read all 16."""
    body_limit, kept, clients = 8 * MIB, 4, 16
    upstream = f"http://127.0.0.1:{free_port()}"
    flags = ("--hold-max-requests", str(kept), "--max-body-bytes", str(body_limit), "--hold-deadline-s", "3")
    with front_process(upstream, *flags) as fronted:
        assert http("GET", f"{fronted.url}/v2/health/ready").status == 200
        before = fronted.vm("VmRSS")
        statuses: list[int] = []
        request = post(f"/v2/models/{MODEL}/infer", b"7" * body_limit)
        threads = [
            threading.Thread(target=lambda: statuses.append(exchange(fronted.url, request, 30)[0]))
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        growth = fronted.vm("VmHWM") - before
        assert statuses == [503] * clients  # the kept ones past their deadline, the others at once
        assert growth <= kept * 2 * body_limit + 24 * MIB, f"peak grew by {growth / MIB:.0f} MiB"


# ------------------------------------------------------------------------------- abandoned requests


def test_a_client_that_hangs_up_while_held_frees_its_place_at_once_and_is_never_forwarded() -> None:
    """Defect class: abandoned held requests — a client that hung up kept its place until the deadline
    (ghosts fill the bound, real requests get 503, the held gauge the autoscaler reads is inflated) and
    its request was still forwarded at the wake."""
    port = free_port()
    with front_process(
        f"http://127.0.0.1:{port}", "--hold-max-requests", "1", "--hold-deadline-s", "30"
    ) as fronted:
        ghost = connect(fronted.url)
        ghost.sendall(post(f"/v2/models/{MODEL}/infer", b"{}", "X-Client: ghost"))
        assert wait_until(lambda: held(fronted.url) == 1, 5)
        ghost.close()
        assert wait_until(lambda: held(fronted.url) == 0, 2), "the hung-up request still counts as held"
        answers: list[tuple[int, bytes]] = []
        real = threading.Thread(
            target=lambda: answers.append(
                exchange(fronted.url, post(f"/v2/models/{MODEL}/infer", b"{}", "X-Client: real"), 30)
            )
        )
        real.start()
        assert wait_until(lambda: held(fronted.url) == 1, 5)  # held in the freed place, not refused
        with recording_upstream(port) as seen:  # the model wakes
            real.join(30)
            time.sleep(0.5)  # time for anything else the front might still send
        assert answers and answers[0][0] == 200, answers
        assert [client for _, client, _ in seen] == ["real"]
        assert held(fronted.url) == 0


# ---------------------------------------------------------------------------------- request-target


TARGETS = [
    "/v2/models/x/../digits/infer?a=%2f&b=c%20d",  # dot segments and an escaped slash in the query
    "/v2/%7Edigits//infer?q=%zz",  # an escape of an unreserved character, an empty segment, a bad escape
    "/v2/models/../health/live",  # resolves to the front's own route, but was not sent as it
    "/./metrics",
]


@pytest.mark.parametrize("target", TARGETS)
def test_the_front_forwards_the_request_target_unchanged(target: str) -> None:
    """Defect class: request-target rewriting — the front resolved `..` and re-quoted the path and
    query, so a target the model's server would refuse (404) was answered through the front (200)."""
    port = free_port()
    with recording_upstream(port) as seen, front_process(f"http://127.0.0.1:{port}") as fronted:
        raw = f"GET {target} HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n".encode()
        status, response = exchange(fronted.url, raw)
        assert status == 200, response[:300]
        assert [t for t, _, _ in seen] == [target]
        assert (
            exchange(fronted.url, b"GET /v2/health/live HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n")[0]
            == 200
        )
        assert len(seen) == 1  # its own health route, as sent, stays the front's


# -------------------------------------------------------------------------------------- malformed HTTP


MALFORMED = {
    "negative Content-Length": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: f\r\nContent-Length: -1\r\n\r\n",
    "Content-Length and chunked": (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: f\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "no Host": b"GET /v2/models/digits HTTP/1.1\r\nConnection: close\r\n\r\n",
    "a broken chunk": (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "a newline in a header": b"GET / HTTP/1.1\r\nHost: f\r\nX-Bad: a\rb\r\n\r\n",
}


def test_malformed_http_is_logged_on_one_line_at_debug_never_as_an_error_with_a_traceback() -> None:
    """Defect class: log flooding by malformed HTTP — each request aiohttp could not parse was an ERROR
    with a traceback (as was a client hanging up mid-body), so any client could flood the logs and
    trip error-log alerts. Each is now the client's fault: answered 400, one line at DEBUG."""
    upstream = f"http://127.0.0.1:{free_port()}"
    with front_process(upstream, "--log-level", "DEBUG", "--hold-deadline-s", "2") as fronted:
        for case, raw in MALFORMED.items():
            status, response = exchange(fronted.url, raw)
            assert status == 400, (case, response[:300])
        with connect(fronted.url) as gone:  # a client that hangs up halfway through its body
            gone.sendall(head(f"/v2/models/{MODEL}/infer", 100) + b"{" * 50)
            time.sleep(0.3)
        time.sleep(0.3)
    log = "".join(fronted.log)
    assert "Traceback" not in log and " ERROR " not in log and " WARNING " not in log, log
    malformed = [line for line in fronted.log if "malformed request" in line]
    assert len(malformed) == len(MALFORMED), log
    assert all(" DEBUG " in line and line.count("\n") == 1 for line in malformed), malformed


def test_frugal_serve_logs_malformed_http_without_a_traceback(artifacts: Path) -> None:
    """Defect class: log flooding by malformed HTTP, on the model's own server: `frugal serve` logged each
    request aiohttp could not parse as an ERROR with a traceback. It answers 400 and logs nothing above
    DEBUG."""
    with running_server(artifacts, "fp32", "--model-name", MODEL) as server:
        for case, raw in MALFORMED.items():
            status, response = exchange(server.url, raw)
            assert status == 400, (case, response[:300])
    # The server's last line says it stopped: everything it logged about those requests is read by then.
    assert wait_until(lambda: "stopped cleanly" in server.stderr(), 10), server.stderr()
    log = server.stderr()
    assert "Traceback" not in log and " ERROR " not in log and "Error handling request" not in log, log
