"""Shutdown under keep-alive load: no request that reached the server is lost.

Real parts: a `frugal serve` subprocess, REST clients on persistent connections (http.client, one
connection each, reused until the server says `Connection: close`) and gRPC clients (tritonclient,
one channel each, which GOAWAY moves off the server), sending back-to-back through a SIGTERM. Every
request must end one of two ways: answered, or refused at connect time (the listener is closed). A
request written to an open connection and then met by a closed socket is lost: the client cannot tell
whether it ran, and for a non-idempotent POST it must not retry.

gRPC's C core ends calls that reach a stopping server before a handler picked them up with
CANCELLED; the gRPC clients use the channel configuration we recommend (`CLIENT_SERVICE_CONFIG`),
which retries those. The server's own count of answers, logged at exit, must equal the clients'
count: a retried call that had run would make the server's count the larger one.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from serving_support import http as http_get
from serving_support import metric_value, mlp, running_server, write_artifacts

from frugal.serving.server.grpc_transport import CLIENT_SERVICE_CONFIG

MODEL = "digits"
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("drain"), MODEL, {"fp32": mlp()})


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    after_signal: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, signalled: threading.Event, status: int = 0, why: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if status:
                self.statuses[status] += 1
                if signalled.is_set():
                    self.after_signal += 1
            if why:
                self.lost.append(why)


def keep_alive_client(url: str, tally: Tally, signalled: threading.Event, reconnects: Counter[str]) -> None:
    """Send back-to-back on one connection until the server refuses a new one."""
    parts = urlsplit(url)
    path = f"/v2/models/{MODEL}/infer"
    connection: http.client.HTTPConnection | None = None
    while True:
        if connection is None:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            try:
                connection.connect()
            except ConnectionRefusedError:
                tally.add("refused at connect", signalled)
                return
        try:
            connection.request("POST", path, BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except (http.client.HTTPException, OSError) as exc:  # sent, then the socket closed: lost
            tally.add("lost", signalled, why=f"{type(exc).__name__}: {exc}")
            connection.close()
            connection = None
            continue
        tally.add("answered", signalled, response.status)
        if response.will_close:
            with tally.lock:
                reconnects[response.getheader("Connection", "")] += 1
            connection.close()
            connection = None


REFUSED_AT_CONNECT = ("failed to connect", "connection refused", "connect failed")


def grpc_client(target: str, tally: Tally, signalled: threading.Event) -> None:
    """One gRPC channel, unary calls back-to-back, until the channel cannot connect any more."""
    import numpy as np
    import tritonclient.grpc as triton

    tensor = triton.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
    options = [("grpc.enable_retries", 1), ("grpc.service_config", CLIENT_SERVICE_CONFIG)]
    with triton.InferenceServerClient(target, channel_args=options) as client:
        while True:
            try:
                client.infer(MODEL, [tensor], client_timeout=60)
            except triton.InferenceServerException as exc:
                text = f"{exc.status()}: {exc.message()}"
                if exc.status() == "StatusCode.UNAVAILABLE" and any(
                    phrase in text.lower() for phrase in REFUSED_AT_CONNECT
                ):
                    tally.add("grpc refused at connect", signalled)
                    return
                tally.add("lost", signalled, why=f"grpc {text}")
                continue
            tally.add("grpc answered", signalled, 200)


def test_sigterm_under_keep_alive_load_loses_no_request(artifacts: Path) -> None:
    tally, signalled, closes = Tally(), threading.Event(), Counter[str]()
    with running_server(artifacts, "fp32", "--shutdown-grace-s", "2") as server:
        assert server.grpc_target is not None
        clients = [
            threading.Thread(target=keep_alive_client, args=(server.url, tally, signalled, closes), daemon=True)
            for _ in range(32)
        ] + [
            threading.Thread(target=grpc_client, args=(server.grpc_target, tally, signalled), daemon=True)
            for _ in range(8)
        ]
        for client in clients:
            client.start()
        time.sleep(1.0)
        before = sum(tally.outcomes.values())
        assert before > 32, f"the clients barely ran before the signal ({tally.outcomes})"
        assert not closes, "a serving server must keep connections alive"
        server.process.send_signal(signal.SIGTERM)
        signalled.set()
        for client in clients:
            client.join(60)
        assert not any(client.is_alive() for client in clients), "a client hung on a connection"
        assert server.process.wait(30) == 0
    assert tally.outcomes["lost"] == 0, (tally.outcomes, tally.lost[:5])
    assert tally.outcomes["refused at connect"] == 32  # each client ended at the closed listener
    assert tally.outcomes["grpc refused at connect"] == 8
    assert tally.outcomes["grpc answered"] > 8
    assert set(tally.statuses) == {200}, tally.statuses
    assert tally.after_signal > 32, "the grace served keep-alive clients after SIGTERM"
    assert closes["close"] > 0, "draining responses told clients to reconnect"
    answered_by_server = re.search(r"stopped cleanly after answering (\d+) inference", server.stderr())
    assert answered_by_server, server.stderr()[-2000:]
    assert int(answered_by_server.group(1)) == tally.outcomes["answered"] + tally.outcomes["grpc answered"]


def test_a_client_that_leaves_mid_body_is_counted_not_an_error(artifacts: Path) -> None:
    import socket

    with running_server(artifacts, "fp32") as server:
        parts = urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(
                f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n{BODY[:20]}".encode()
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        disconnects = 0.0
        while time.monotonic() < deadline:
            text = http_get("GET", f"{server.url}/metrics").body.decode()
            disconnects = metric_value(text, "frugal_client_disconnects_total")
            if disconnects:
                break
            time.sleep(0.05)
        assert disconnects == 1
        assert "frugal_requests_total{" not in text  # not counted as a request answered
        assert http_get("GET", f"{server.url}/v2/health/live").status == 200
    assert "Traceback" not in server.stderr() and "ERROR" not in server.stderr(), server.stderr()
