"""Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas exactly
one reconciles and ticks the autoscaler at a time (the others stand by).

Two parts. The decision is pure: :func:`decide` takes the Lease's record as last read, when this
process last saw that record change (its own monotonic clock: no other process's clock is trusted,
as in client-go), the time now and this process's identity, and says what to do — create the Lease,
take it over, renew it, stand by, or stop because leadership is lost. :class:`Elector` is the thin
I/O part: it reads the Lease through the project's :class:`~frugal.operator.cluster.apply.Cluster`
and writes it with optimistic concurrency (create, or replace at the resourceVersion it read: a 409
means another candidate won the race).

The timing is client-go's: a lease lasts 15 s, the leader gives up when it has not renewed for 10 s
(the renew deadline, shorter than the lease so it stops before anyone may take over), and every
candidate tries every 2 s (the retry period). A leader stopping gracefully releases the Lease (no
holder, a 1 s duration) so that a standby takes over at its next try.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from frugal.operator.control.port import ApiError

if TYPE_CHECKING:
    from frugal.operator.cluster.apply import Cluster

log = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"
DEFAULT_LEASE_NAME = "frugal-operator"
RELEASED_DURATION_S = 1  # what a released Lease says; a Lease's duration must be at least 1 s


@dataclass(frozen=True)
class Timing:
    """client-go's parameters: the lease's duration, how long a leader may go without renewing before
    it stops, and how often every candidate tries."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def problem(self) -> str | None:
        """Why these cannot elect safely, or None."""
        if not self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            return "need retry period < renew deadline < lease duration"
        return None


@dataclass(frozen=True)
class Record:
    """What a Lease's spec says about its holder (times as written, never compared across clocks)."""

    holder: str | None
    duration_s: float
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Record:
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_s=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        fields = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(RELEASED_DURATION_S, round(self.duration_s)),
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }
        return {key: value for key, value in fields.items() if value is not None}


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    ACQUIRE = "acquire"  # free (released or expired): take it over
    RENEW = "renew"  # mine: renew it
    STAND_BY = "stand-by"  # another holds it and it has not expired
    LOST = "lost"  # I led and may no longer: stop at once


@dataclass(frozen=True)
class Observation:
    """The record as last read, and when (this process's monotonic clock) it was first seen so."""

    record: Record | None
    seen_at: float


def observe(previous: Observation | None, record: Record | None, now: float) -> Observation:
    """The observation after reading `record` at `now`: its time moves only when the record changed
    (a leader renewing changes renewTime, so a live leader keeps its lease fresh in everyone's eyes)."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def decide(
    record: Record | None,
    seen_at: float,
    now: float,
    identity: str,
    timing: Timing,
    renewed_at: float | None = None,
) -> Action:
    """What the candidate `identity` does, having read `record` (first seen so at `seen_at`) at `now`.
    `renewed_at`: when it last wrote the Lease as its holder while leading, None while not leading."""
    leading = renewed_at is not None
    if renewed_at is not None and now - renewed_at > timing.renew_deadline_s:
        return Action.LOST
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if leading:
        return Action.LOST  # someone else holds it now
    if record.holder is None or now - seen_at >= record.duration_s:
        return Action.ACQUIRE
    return Action.STAND_BY


def claimed(record: Record | None, identity: str, stamp: str, timing: Timing) -> Record:
    """The record `identity` writes to create, take over or renew the Lease at the wall time `stamp`."""
    if record is not None and record.holder == identity:
        return replace(record, renew_time=stamp, duration_s=timing.lease_duration_s)
    transitions = 0 if record is None else record.transitions + 1
    return Record(identity, timing.lease_duration_s, stamp, stamp, transitions)


def released(record: Record, stamp: str) -> Record:
    """The record a leader leaves when it stops gracefully: no holder, so a standby takes it at once."""
    return Record(None, RELEASED_DURATION_S, stamp, stamp, record.transitions)


def micro_time(at: datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds, UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_identity(environ: Mapping[str, str] = os.environ) -> str:
    """The pod's name (POD_NAME from the downward API, else HOSTNAME) and a random suffix, so a
    restarted container of the same pod is a new candidate, as in client-go."""
    name = environ.get("POD_NAME") or environ.get("HOSTNAME") or socket.gethostname()
    return f"{name}_{secrets.token_hex(4)}"


class Elector:
    """Candidate for the Lease `namespace/name` as `identity`; thread-safe enough for one main loop
    plus the renewing and watchdog threads it starts while leading."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cluster, self.namespace, self.name, self.identity = cluster, namespace, name, identity
        self.timing, self._clock, self._wall = timing, clock, wall
        self._lock = threading.Lock()
        self._observed: Observation | None = None
        self._renewed_at: float | None = None
        self._lost = False
        self.tried_at = clock()  # when the last try ended: the standby's liveness reads it

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None and not self._lost

    def try_once(self) -> Action:
        """Read the Lease, decide and act once; the action it decided (LOST once lost)."""
        with self._lock:
            try:
                return self._try()
            finally:
                self.tried_at = self._clock()

    def _try(self) -> Action:
        if self._lost:
            return Action.LOST
        now = self._clock()
        try:
            found = self.cluster.get(LEASE_API, "Lease", self.namespace, self.name)
        except Exception as error:  # unreachable, refusing, restarting: try again
            log.warning("cannot read the Lease %s/%s: %s", self.namespace, self.name, error)
            return self._deadline(now)
        record = Record.of(found.get("spec") or {}) if found is not None else None
        self._observed = observe(self._observed, record, now)
        action = decide(record, self._observed.seen_at, now, self.identity, self.timing, self._renewed_at)
        if action is Action.LOST:
            self._lost = True
        elif action is not Action.STAND_BY:
            mine = claimed(record, self.identity, micro_time(self._wall()), self.timing)
            self._write(action, found, mine, now)
        return action

    def _deadline(self, now: float) -> Action:
        """After a failed read: LOST if that took the leader past its renew deadline."""
        if self._renewed_at is not None and now - self._renewed_at > self.timing.renew_deadline_s:
            self._lost = True
            return Action.LOST
        return Action.RENEW if self._renewed_at is not None else Action.STAND_BY

    def _write(self, action: Action, found: dict[str, Any] | None, record: Record, now: float) -> None:
        body: dict[str, Any] = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.spec(),
        }
        try:
            if found is None:
                written = self.cluster.create(body)
            else:
                body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
                written = self.cluster.replace(body)
        except Exception as error:  # as for the read; the watchdog counts the deadline
            if not (isinstance(error, ApiError) and error.status == 409):  # 409: another candidate won
                log.warning("cannot %s the Lease %s/%s: %s", action.value, self.namespace, self.name, error)
            return
        self._observed = Observation(Record.of(written.get("spec") or {}), now)
        if self._renewed_at is None:
            log.info("Leading: acquired the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self._renewed_at = now

    def wait_to_lead(self, stop: threading.Event) -> bool:
        """Try every retry period until leading (True) or `stop` is set (False)."""
        log.info(
            "Standing by for the Lease %s/%s as %s (every %.0f s)",
            self.namespace, self.name, self.identity, self.timing.retry_period_s,
        )  # fmt: skip
        while not stop.is_set():
            self.try_once()
            if self.leading:
                return True
            stop.wait(self.timing.retry_period_s)
        return False

    def keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> list[threading.Thread]:
        """While leading: renew every retry period, and call `on_lost` (once) when the Lease is lost or
        not renewed within the renew deadline — by a watchdog too, so a renewal hung in I/O counts."""
        fired = threading.Event()

        def lost() -> None:
            if not fired.is_set() and not stop.is_set():
                fired.set()
                on_lost()

        def renewing() -> None:
            while not stop.wait(self.timing.retry_period_s):
                if self.try_once() is Action.LOST:
                    lost()
                    return

        def watching() -> None:
            while not stop.wait(min(0.5, self.timing.retry_period_s)):
                renewed = self._renewed_at
                if renewed is None or self._clock() - renewed > self.timing.renew_deadline_s:
                    lost()
                    return

        threads = [
            threading.Thread(target=renewing, name="lease-renew", daemon=True),
            threading.Thread(target=watching, name="lease-watchdog", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def release(self) -> bool:
        """Give the Lease up (a graceful stop): no holder, so a standby takes it at its next try.
        Only when this process still holds it; stop :meth:`keep`'s threads first. True when released."""
        with self._lock:
            if not self.leading:
                return False
            try:
                found = self.cluster.get(LEASE_API, "Lease", self.namespace, self.name)
                if found is None or Record.of(found.get("spec") or {}).holder != self.identity:
                    return False
                record = released(Record.of(found["spec"]), micro_time(self._wall()))
                body = {
                    "apiVersion": LEASE_API,
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "resourceVersion": found["metadata"]["resourceVersion"],
                    },
                    "spec": record.spec(),
                }
                self.cluster.replace(body)
            except Exception as error:  # then the Lease expires instead
                log.warning("cannot release the Lease %s/%s: %s", self.namespace, self.name, error)
                return False
            self._renewed_at, self._lost = None, True  # done: no later try takes it back
            log.info("Released the Lease %s/%s", self.namespace, self.name)
            return True
