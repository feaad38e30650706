"""A serving shard on this machine: what a Deployment, its ReplicaSet and its Service do in a cluster.

A :class:`Shard` holds the shard's pod template made local (:class:`ReplicaTemplate`: the container's
command and environment, with loopback addresses), the replica processes started from it, and the
shard's balancer (:mod:`frugal.operator.local.balancer`), which plays the Service: a stable port in
front of the ready replicas.

* :meth:`Shard.scale_to` is the Deployment controller: it starts replicas up to the count asked for
  (each joins the balancer once ``/v2/health/ready`` answers) or retires the surplus, starting ones
  first, then the newest.
* Retiring a replica never drops a request: it leaves the balancer first, the requests it is still
  answering finish, then it gets SIGTERM (the server drains again on its side) and is waited for.
* A replica that exits on its own is reaped: out of the balancer, and replaced at the next
  :meth:`Shard.scale_to`; one that fails to start is remembered (:attr:`Shard.failures`), so the
  runner can back off as a kubelet does.
* A shard that is not :attr:`~Shard.routable` keeps its ready replicas out of the balancer until
  :meth:`Shard.route` (a rollover's first stage waits for its Service to select it).

Every replica's start and stop times are kept, for the replica-seconds of the summary.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from frugal.operator.local import processes
from frugal.operator.local.balancer import Balancer, BalancerHost

READY_TIMEOUT_SECONDS = 120.0
DRAIN_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 15.0

Report = Callable[[str], None]


class ReplicaFailed(RuntimeError):
    """A replica exited or did not become ready; the message names its log."""


@dataclass(frozen=True)
class ReplicaTemplate:
    """A shard's pod template as a local process: argv (without ``--port``), environment, log folder."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_dir: Path


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    ready_at: float | None = None
    retiring: bool = False
    stopped_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.stopped_at is None and self.process.poll() is None

    def seconds_within(self, start: float, end: float) -> float:
        """How long this replica ran inside [start, end]."""
        stopped = end if self.stopped_at is None else min(end, self.stopped_at)
        return max(0.0, stopped - max(start, self.started))


@dataclass
class Shard:
    index: int
    template: ReplicaTemplate
    balancer: Balancer
    host: BalancerHost
    report: Report
    replicas: list[Replica] = field(default_factory=list)
    # Called with a replica just before it is stopped (its last metrics are read then).
    on_retire: Callable[[Replica], None] | None = None
    # Whether ready replicas join the balancer (see route()).
    routable: bool = True
    # Why replicas failed to start, oldest first, and when the last one did.
    failures: list[str] = field(default_factory=list)
    failed_at: float | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _serial: int = field(default=0, init=False)
    _closing: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        """The shard's stable address: its balancer."""
        return self.balancer.url

    @property
    def name(self) -> str:
        return self.template.name

    def active(self) -> list[Replica]:
        """Replicas counted toward the shard's size: started or ready, not retiring, not exited."""
        with self._lock:
            return [r for r in self.replicas if not r.retiring and r.stopped_at is None]

    def ready(self) -> list[Replica]:
        with self._lock:
            return [r for r in self.active() if r.ready_at is not None]

    def starting(self) -> list[Replica]:
        with self._lock:
            return [r for r in self.active() if r.ready_at is None]

    def alive(self) -> bool:
        return any(r.alive for r in self.active())

    def start_replica(self) -> Replica:
        """Start one process from the template; it joins the balancer only when ready."""
        with self._lock:
            serial, self._serial = self._serial, self._serial + 1
            port = processes.free_port()
            argv = processes.with_flag(self.template.argv, "--port", str(port))
            # the local balancer routes REST only, and replicas sharing one host cannot share a gRPC port
            argv = processes.with_flag(argv, "--grpc-port", "-1")
            log_path = self.template.log_dir / f"{self.template.name}-{serial}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log:
                process = processes.start(argv, self.template.env, log)
            replica = Replica(
                f"{self.template.name}-{serial}",
                f"http://127.0.0.1:{port}",
                process,
                log_path,
                time.monotonic(),
            )
            self.replicas.append(replica)
        self.report(
            f"serving: shard {self.index} replica {replica.name} starting on {replica.url} (log {log_path})"
        )
        return replica

    def admit(self, replica: Replica, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait for `replica` to be ready, then route to it; ReplicaFailed (and stopped) if it is not."""
        try:
            wait_ready(replica, timeout)
        except ReplicaFailed:
            self._stop(replica)
            raise
        with self._lock:
            if self._closing or replica.retiring:
                return
            if self.routable:
                self.host.add(self.balancer, replica.url)
            replica.ready_at = time.monotonic()

    def route(self) -> None:
        """From now on route to this shard's ready replicas (those ready already join at once)."""
        with self._lock:
            if self.routable or self._closing:
                return
            self.routable = True
            for replica in self.ready():
                self.host.add(self.balancer, replica.url)

    def scale_to(self, count: int) -> None:
        """Start or retire replicas until `count` are active; returns at once (work goes on in threads)."""
        self.reap()
        with self._lock:
            if self._closing:
                return
            active = self.active()
            for _ in range(count - len(active)):
                replica = self.start_replica()
                threading.Thread(target=self._admit_quietly, args=(replica,), daemon=True).start()
            # Retire those still starting first, then the newest.
            surplus = sorted(active, key=lambda r: (r.ready_at is not None, -r.started))
            for replica in surplus[: max(0, len(active) - count)]:
                replica.retiring = True
                threading.Thread(target=self.retire, args=(replica,), daemon=True).start()

    def _admit_quietly(self, replica: Replica) -> None:
        try:
            self.admit(replica)
        except ReplicaFailed as error:
            if not replica.retiring:
                self.failures.append(str(error))
                self.failed_at = time.monotonic()
                self.report(f"serving: shard {self.index}: {error}")
            return
        if replica.ready_at is not None:
            waited = replica.ready_at - replica.started
            self.report(f"serving: shard {self.index} replica {replica.name} ready in {waited:.1f}s")

    def retire(self, replica: Replica) -> None:
        """Out of the balancer, wait for its requests, then SIGTERM and wait for the process."""
        replica.retiring = True
        drained = self.host.remove(self.balancer, replica.url, DRAIN_TIMEOUT_SECONDS)
        if not drained:
            self.report(
                f"serving: shard {self.index} replica {replica.name} still busy after "
                f"{DRAIN_TIMEOUT_SECONDS:.0f}s; stopping it anyway"
            )
        if self.on_retire is not None and replica.ready_at is not None and replica.alive:
            self.on_retire(replica)
        self._stop(replica)

    def reap(self) -> list[Replica]:
        """Ready replicas that exited on their own: out of the balancer, marked stopped (one that dies
        while starting is reported by its admission)."""
        exited = []
        with self._lock:
            for replica in self.ready():
                if replica.process.poll() is not None:
                    exited.append(replica)
        for replica in exited:
            self.host.remove(self.balancer, replica.url, 0.0)
            replica.stopped_at = time.monotonic()
            self.report(
                f"serving: shard {self.index} replica {replica.name} exited with "
                f"{replica.process.returncode}: {last_line(replica.log_path)}"
            )
        return exited

    def close(self) -> list[threading.Thread]:
        """Take every replica out of the balancer and wait for their requests (no new ones start from
        now on), then stop them in threads, returned for the caller to join."""
        with self._lock:
            self._closing = True
            running = [r for r in self.replicas if r.stopped_at is None]
            for replica in running:
                replica.retiring = True
        for replica in running:
            self.host.remove(self.balancer, replica.url, DRAIN_TIMEOUT_SECONDS)
            if self.on_retire is not None and replica.ready_at is not None and replica.alive:
                self.on_retire(replica)
        threads = [threading.Thread(target=self._stop, args=(r,), daemon=True) for r in running]
        for thread in threads:
            thread.start()
        return threads

    def _stop(self, replica: Replica) -> None:
        if replica.process.poll() is None:
            replica.process.terminate()
        try:
            replica.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
        if replica.stopped_at is None:
            replica.stopped_at = time.monotonic()


def wait_ready(replica: Replica, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise ReplicaFailed(
                f"replica {replica.name} exited with {replica.process.returncode}: {last_line(replica.log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{replica.url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise ReplicaFailed(f"replica {replica.name} not ready after {timeout:.0f}s (log {replica.log_path})")


def last_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no output)"


def start_replicas(
    shards: Sequence[Shard], counts: Sequence[int], timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Start `counts[i]` replicas of every shard at once and wait until all are ready."""
    started = [
        (shard, shard.start_replica())
        for shard, count in zip(shards, counts, strict=True)
        for _ in range(count)
    ]
    for shard, replica in started:
        shard.admit(replica, timeout)
