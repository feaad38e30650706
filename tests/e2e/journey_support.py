"""What the e2e journey reads off the cluster and sends to the model, kept out of the test's story."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from controlplane_harness import REPO_ROOT

from frugal.operator.local.evaluation import held_out, infer_body
from frugal.operator.manifests.container_commands import SERVING_PORT
from frugal.schema.artifact_format import Variant

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"
JOURNEY_NAMESPACE = "frugal"
POOL_LABEL = "frugal.dev/pool"
POOL_TAINT = "frugal.dev/pool"
CHECK_BATCH = 64


class ImageBuildError(RuntimeError):
    """scripts/build-images.sh failed: the e2e tier cannot run without its images."""


@dataclass(frozen=True)
class BuiltImages:
    """What ``scripts/build-images.sh`` printed: IMAGE_<TARGET>= and ARCHIVE_<TARGET>= lines."""

    values: Mapping[str, str]

    @classmethod
    def build(cls, *targets: str) -> BuiltImages:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT), *targets], capture_output=True, text=True, check=False,
                              cwd=REPO_ROOT, env=dict(os.environ))  # fmt: skip
        if proc.returncode != 0:
            raise ImageBuildError(f"{BUILD_SCRIPT} {' '.join(targets)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
        values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        return cls(values)

    def reference(self, target: str) -> str:
        return self.values[f"IMAGE_{target.upper()}"]

    def archive(self, target: str) -> Path:
        return Path(self.values[f"ARCHIVE_{target.upper()}"])


@dataclass(frozen=True)
class ContainerState:
    name: str
    container_id: str
    ready: bool
    restarts: int
    terminated_reason: str | None
    last_terminated_reason: str | None


def container_states(pod: Mapping[str, Any]) -> list[ContainerState]:
    """The kubelet's word on each container of `pod`."""
    found = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        found.append(
            ContainerState(
                name=status["name"],
                container_id=status.get("containerID", ""),
                ready=bool(status.get("ready")),
                restarts=int(status.get("restartCount", 0)),
                terminated_reason=((status.get("state") or {}).get("terminated") or {}).get("reason"),
                last_terminated_reason=((status.get("lastState") or {}).get("terminated") or {}).get("reason"),
            )
        )
    return found


def pods_of(cluster: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    proc = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
    return items


def restricted_namespace(cluster: Any, name: str) -> None:
    """A namespace whose pods must pass the restricted Pod Security Standard (real admission)."""
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")  # fmt: skip


def pool_profile(profile: dict[str, Any], pool: str = "cpu") -> dict[str, Any]:
    """`profile` placed on the node pool the test labelled and tainted."""
    spec = dict(profile["spec"])
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), POOL_LABEL: pool}
    toleration = {"key": POOL_TAINT, "operator": "Equal", "value": pool, "effect": "NoSchedule"}
    spec["tolerations"] = [*(spec.get("tolerations") or []), toleration]
    return {**profile, "spec": spec}


class PodDiscovery:
    """Keeps Prometheus' targets the serving and front pods of a namespace that have an address, read
    from the API server every `interval_s` (Debian's Prometheus is built without Kubernetes discovery,
    so this plays its part: what a PodMonitor selects, port http, with namespace and pod labels)."""

    def __init__(self, cluster: Any, prometheus: Any, namespace: str, interval_s: float = 2.0) -> None:
        self.cluster, self.prometheus, self.namespace, self.interval_s = cluster, prometheus, namespace, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-discovery", daemon=True)

    def targets(self) -> list[tuple[str, dict[str, str]]]:
        proc = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l",
                                    "app.kubernetes.io/component in (serving,front)", "-o", "json", check=False)  # fmt: skip
        if proc.returncode != 0:
            return []
        found = []
        for pod in json.loads(proc.stdout)["items"]:
            address = (pod.get("status") or {}).get("podIP")
            if address and pod["status"].get("phase") == "Running":
                labels = {"namespace": self.namespace, "pod": pod["metadata"]["name"]}
                found.append((f"{address}:{SERVING_PORT}", labels))
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.prometheus.set_targets(self.targets())

    def __enter__(self) -> PodDiscovery:
        self.prometheus.set_targets(self.targets())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def infer(endpoint: str, model: str, body: Mapping[str, Any]) -> np.ndarray:
    request = urllib.request.Request(
        f"{endpoint}/v2/models/{model}/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    [output] = answer["outputs"]
    return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])


def held_out_accuracy(endpoint: str, model: str, entry: Variant) -> tuple[float, int]:
    """Accuracy of the served model on the zoo model's held-out data, sent in batches."""
    data = held_out("zoo://digits-mlp")
    assert data.labels is not None
    predictions = np.concatenate(
        [infer(endpoint, model, infer_body(entry, data.rows(i, i + CHECK_BATCH))) for i in range(0, len(data), CHECK_BATCH)]
    )
    return float(np.mean(predictions.argmax(axis=1) == data.labels)), len(data)


class Load:
    """Closed-loop clients posting one request after another to `url` (each pausing `pause_s` after
    an answer: 0 is as fast as the server answers); every answer's status is counted, and a request
    that got no answer (refused, reset, timed out) counts as status 0."""

    def __init__(self, url: str, body: Mapping[str, Any], clients: int, pause_s: float = 0.0) -> None:
        self.url, self.payload, self.pause_s = url, json.dumps(body).encode(), pause_s
        self.codes: dict[int, int] = {}
        self.first_answer_at: float | None = None  # time.monotonic() of the first 200
        self.failed_at: list[float] = []  # time.monotonic() of each answer that was not a 200
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _send(self) -> int:
        request = urllib.request.Request(self.url, data=self.payload, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0

    def _client(self) -> None:
        while not self._stop.is_set():
            code = self._send()
            with self._lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                if code == 200 and self.first_answer_at is None:
                    self.first_answer_at = time.monotonic()
                if code != 200:
                    self.failed_at.append(time.monotonic())
            if self.pause_s:
                self._stop.wait(self.pause_s)

    def failed(self) -> int:
        with self._lock:
            return sum(count for code, count in self.codes.items() if code != 200)

    def answered(self) -> int:
        with self._lock:
            return self.codes.get(200, 0)

    def __enter__(self) -> Load:
        for client in self._clients:
            client.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for client in self._clients:
            client.join(60)


def seconds_to_ready(pod: Mapping[str, Any]) -> float | None:
    """From the pod's creation to its Ready condition, as the API server recorded them (1 s resolution)."""
    from datetime import datetime

    ready = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return None
    created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    became = datetime.fromisoformat(ready["lastTransitionTime"].replace("Z", "+00:00"))
    return (became - created).total_seconds()


MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory/kubepods")


class MemoryWatch:
    """The peak memory of the pods matching `selector`, read from the kubelet's cgroups (v1) every
    `interval_s` while they run: ``max_usage_in_bytes`` counts the page cache as the limit does;
    ``rss`` is the anonymous memory alone, sampled."""

    def __init__(self, cluster: Any, namespace: str, selector: str, interval_s: float = 0.5) -> None:
        self.cluster, self.namespace, self.selector, self.interval_s = cluster, namespace, selector, interval_s
        self.peak_usage: dict[str, int] = {}
        self.peak_rss: dict[str, int] = {}
        self._uids: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def _cgroup(self, uid: str) -> Path | None:
        found = [*MEMORY_CGROUPS.glob(f"pod{uid}"), *MEMORY_CGROUPS.glob(f"*/pod{uid}")]
        return found[0] if found else None

    def _sample(self) -> None:
        proc = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json", check=False)
        if proc.returncode == 0:
            for pod in json.loads(proc.stdout)["items"]:
                self._uids[pod["metadata"]["name"]] = pod["metadata"]["uid"]
        for name, uid in self._uids.items():
            cgroup = self._cgroup(uid)
            if cgroup is None:
                continue
            try:
                usage = int((cgroup / "memory.max_usage_in_bytes").read_text())
                stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
            except (OSError, ValueError):
                continue  # the pod ended between the glob and the read
            self.peak_usage[name] = max(self.peak_usage.get(name, 0), usage)
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), int(stat.get("total_rss", 0)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
