"""The kubelet and the endpoint Service, as the control-plane tier plays them for one served model
(no kubelet runs on this tier): servers for every serving Deployment of the model (as many as its
spec.replicas, started from the pod template by `serve_from_template`), reported ready; requests
routed to the servers whose pod labels the endpoint Service's selector matches (as last read); a
deleted Deployment taken out of that routing, its requests finished (the pod's preStop drain), and
only then its servers stopped.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane_harness import ControlPlane
from operator_harness import get, http, kubectl_json, mark_ready, serve_from_template
from prometheus_harness import Prometheus

REVISION = "frugal.dev/revision"
DIGITS_REQUEST = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and all(labels.get(key) == value for key, value in selector.items())


class PlayedKubelet:
    def __init__(
        self, cluster: ControlPlane, prometheus: Prometheus, namespace: str, workdir: Path, model: str
    ) -> None:
        self.cluster, self.prometheus, self.namespace, self.workdir = cluster, prometheus, namespace, workdir
        self.model = model
        self.servers: dict[str, list[tuple[subprocess.Popen[bytes], int]]] = {}
        self.pod_labels: dict[str, dict[str, str]] = {}
        self.endpoint_selector: dict[str, str] | None = None
        self.inflight: dict[int, int] = {}
        # Deployments whose servers run but are not reported ready yet (a pod still starting).
        self.hold_ready: set[str] = set()
        self.lock = threading.Lock()

    @property
    def endpoint_revision(self) -> str | None:
        """The revision the endpoint selects (None: a selector without one, as before revisions)."""
        return None if self.endpoint_selector is None else self.endpoint_selector.get(REVISION)

    def revision_of(self, name: str) -> str:
        return self.pod_labels[name].get(REVISION, "none")

    def pick(self, turn: int) -> int | None:
        """A port of a server the endpoint selects (the Service's part), counted in flight."""
        with self.lock:
            ports = [
                port
                for name, servers in self.servers.items()
                if selects(self.endpoint_selector, self.pod_labels[name])
                for _, port in servers
            ]
            if not ports:
                return None
            port = ports[turn % len(ports)]
            self.inflight[port] = self.inflight.get(port, 0) + 1
            return port

    def done(self, port: int) -> None:
        with self.lock:
            self.inflight[port] -= 1

    def answered_by(self, port: int) -> str:
        """The revision of the Deployment whose server owns `port` ("retired" once it is gone)."""
        with self.lock:
            for name, servers in self.servers.items():
                if port in {p for _, p in servers}:
                    return self.revision_of(name)
        return "retired"

    def sync(self) -> None:
        selector = f"frugal.dev/model-deployment={self.model},app.kubernetes.io/component=serving"
        # Deployments first, then the endpoint: the operator moves the endpoint before it deletes.
        listed = kubectl_json(self.cluster, "get", "deployments", "-n", self.namespace, "-l", selector)
        deployments = {d["metadata"]["name"]: d for d in listed["items"]}
        endpoint = get(self.cluster, "service", self.namespace, self.model)
        with self.lock:
            if endpoint is not None:
                self.endpoint_selector = dict(endpoint["spec"]["selector"])
        changed = False
        for name in [n for n in self.servers if n not in deployments]:
            self._retire(name)
            changed = True
        for name, deployment in deployments.items():
            wanted = int(deployment["spec"].get("replicas", 0))
            running = self.servers.setdefault(name, [])
            with self.lock:
                self.pod_labels[name] = dict(deployment["spec"]["template"]["metadata"]["labels"])
            while len(running) < wanted:
                server, port = serve_from_template(deployment, self.workdir)
                wait_ready(server, port)
                with self.lock:
                    running.append((server, port))
                changed = True
            while len(running) > wanted:
                with self.lock:
                    server, _ = running.pop()
                server.send_signal(signal.SIGTERM)
                server.wait(30)
                changed = True
            ready = int((deployment.get("status") or {}).get("readyReplicas", 0))
            if wanted and ready < wanted and name not in self.hold_ready:
                mark_ready(self.cluster, deployment)
        if changed:
            self.prometheus.set_targets(
                (f"127.0.0.1:{port}", {"pod": f"{name}-{i}"})
                for name, servers in self.servers.items()
                for i, (_, port) in enumerate(servers)
            )

    def _retire(self, name: str) -> None:
        with self.lock:
            assert not selects(self.endpoint_selector, self.pod_labels[name]), (
                f"{name} was deleted while the endpoint still selects its pods"
            )
            servers = self.servers.pop(name)
        ports = {port for _, port in servers}
        deadline = time.monotonic() + 10
        while any(self.inflight.get(port, 0) for port in ports):
            assert time.monotonic() < deadline, "requests to a deleted Deployment's servers never finished"
            time.sleep(0.05)
        for server, _ in servers:
            server.send_signal(signal.SIGTERM)
        for server, _ in servers:
            server.wait(30)

    def running(self, name: str) -> int:
        with self.lock:
            return len(self.servers.get(name, []))

    def stop(self) -> None:
        with self.lock:
            every = [server for servers in self.servers.values() for server, _ in servers]
            self.servers.clear()
        for server in every:
            server.send_signal(signal.SIGTERM)
        for server in every:
            server.wait(30)


def wait_ready(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] != 200:
        assert server.poll() is None, f"server on {port} exited {server.returncode}"
        assert time.monotonic() < deadline, f"server on {port} not ready"
        time.sleep(0.2)


class Load:
    """An open-loop client at about `rate_rps` through the endpoint; every answer recorded with the
    revision that answered (None: nothing was selected, a failed request)."""

    def __init__(self, kubelet: PlayedKubelet, rate_rps: float, request: Any = DIGITS_REQUEST) -> None:
        self.kubelet, self.rate_rps, self.request = kubelet, rate_rps, request
        self.stop_event = threading.Event()
        self.answers: list[tuple[str | None, int]] = []
        self._thread = threading.Thread(target=self._client, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self._thread.join(15)

    def _client(self) -> None:
        turn = 0
        url = f"/v2/models/{self.kubelet.model}/infer"
        while not self.stop_event.wait(1.0 / self.rate_rps):
            port = self.kubelet.pick(turn)
            turn += 1
            if port is None:
                self.answers.append((None, 0))
                continue
            try:
                code, _ = http("POST", f"http://127.0.0.1:{port}{url}", self.request)
            finally:
                self.kubelet.done(port)
            self.answers.append((self.kubelet.answered_by(port), code))

    def since(self, start: int, revision: str) -> int:
        return sum(1 for answered, _ in self.answers[start:] if answered == revision)
