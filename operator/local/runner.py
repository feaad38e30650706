"""`frugal up`'s process runner: the kubelet, the Job and Deployment controllers and kube-proxy of one
machine, watching the in-memory store (:mod:`frugal.operator.local.store`).

It decides nothing: the operator's reconciler and autoscaler write Jobs and Deployments to the store;
the runner carries them out and writes their status back, as the cluster's controllers would.

* **A Job** without a final condition runs its container as processes (an Indexed Job's completions
  at once, :func:`run_job`); then its ``Complete`` or ``Failed`` condition is written, a failure with
  the last line the container printed (what a pod's termination message carries).
* **A serving Deployment** becomes a :class:`~frugal.operator.local.replicas.Shard`: its pod template
  as a local process, started ``spec.replicas`` times, with ``status.readyReplicas`` written as
  replicas become ready. A replica that fails to start is started again after a back-off that
  doubles, as a kubelet's does. A deleted Deployment's replicas leave their balancer, finish what they
  hold and stop, first stage first.
* **Services** are balancers on loopback. Stage k's ``--next-stage`` (``http://<shard k+1>.<ns>.svc``)
  is the balancer of shard k+1's Service. The model's endpoint is one balancer for the life of the run
  (its port never changes): it routes to the first stage of the revision the endpoint Service
  (behind a front, the ``-live`` Service) selects, so a rollover's new revision takes traffic exactly
  when the reconciler moves that selector, and the old one leaves when its Deployments are deleted.
* **The scale-to-zero front** is the endpoint balancer's :class:`~frugal.serving.front.Hold`: with
  no ready replica it holds requests (bounded, with a deadline) and signals the demand; the front's
  Deployment is reported ready without a process.

One ModelDeployment per runner (`frugal up` runs one), so one endpoint.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from frugal.operator.api.spec import Owner
from frugal.operator.control.port import ApiError
from frugal.operator.local import processes
from frugal.operator.local.balancer import Balancer, BalancerHost, Hold
from frugal.operator.local.replicas import EXIT_TIMEOUT_SECONDS, ReplicaTemplate, Shard, last_line
from frugal.operator.local.store import Store
from frugal.operator.manifests import names, pod_specs

THREADS_ENV = "FRUGAL_INTRA_OP_THREADS"
# The compression component's ranks meet through this file when it is set (no port to pick).
RENDEZVOUS_FILE_ENV = "FRUGAL_RENDEZVOUS_FILE"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
# How often readiness is looked at when the store says nothing (replicas become ready on their own).
SYNC_SECONDS = 0.2
FIRST_BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 60.0

Report = Callable[[str], None]
Revision = tuple[int, int]  # (generation, serving revision)


@dataclass
class _Deployment:
    shard: Shard
    revision: Revision
    written: tuple[int, int] | None = None  # (replicas, ready) last written to the status


@dataclass
class ProcessRunner:
    store: Store
    owner: Owner
    workdir: Path
    report: Report
    port: int = 0  # the endpoint's (0: any free port)
    hold: Hold | None = None  # the front's: requests wait at zero replicas instead of a 503
    on_demand: Callable[[], None] | None = None  # a request is held at zero replicas
    # Called with a revision's shards once its Deployments are gone (a rollover's old option).
    on_retired: Callable[[list[Shard]], None] | None = None
    serve: bool = True  # False: run Jobs only (frugal batch plans, it does not serve)
    # Each replica as it stops (its last metrics are read then).
    on_retire: Callable[[Any], None] | None = None
    host: BalancerHost = field(init=False)
    endpoint: Balancer = field(init=False)
    retired: list[list[Shard]] = field(default_factory=list, init=False)
    _deployments: dict[str, _Deployment] = field(default_factory=dict, init=False)
    _stage_balancers: dict[str, Balancer] = field(default_factory=dict, init=False)
    _jobs: dict[tuple[str, str], threading.Thread] = field(default_factory=dict, init=False)
    _stopping: list[threading.Thread] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)

    def __post_init__(self) -> None:
        self.host = BalancerHost()
        name = names.endpoint_service(self.owner)
        if not self.serve:
            self.endpoint = Balancer(name)  # never listens: nothing is served
            return
        self.endpoint = self.host.start(name, self.port, self.hold, self._demand)
        self.report(f"serving: endpoint balancer on {self.endpoint.url}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frugal-up-runner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = 0
        while not self._stop.is_set():
            version = self.store.wait_for_change(version, SYNC_SECONDS)
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as error:  # a bad pass must not end the run; the next one tries again
                self.report(f"runner: {type(error).__name__}: {error}")

    def sync(self) -> None:
        """Carry out what the store holds now: start Jobs, run, route, retire and scale replicas."""
        with self._lock:
            for job in self.store.find("batch/v1", "Job", None, {}):
                self._start_job(job)
            if not self.serve:
                return
            selector = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_MD: self.owner.name}
            deployments = self.store.find("apps/v1", "Deployment", self.owner.namespace, selector)
            serving = [d for d in deployments if _role(d) == "serving"]
            self._add(serving)
            live = self._live_revision()
            for entry in self._deployments.values():
                if entry.shard.index == 0 and entry.revision == live:
                    entry.shard.route()
            self._retire({d["metadata"]["name"] for d in serving})
            for deployment in serving:
                self._scale(deployment)
            for front in (d for d in deployments if _role(d) == "front"):
                replicas = int(front["spec"].get("replicas", 1))
                self._write_status(front, (replicas, replicas))

    # -- Jobs ------------------------------------------------------------------------------------------

    def _start_job(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if key in self._jobs or _finished(job):
            return
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{meta['name']}", daemon=True)
        self._jobs[key] = thread
        thread.start()

    def _run_job(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        name, namespace = meta["name"], meta.get("namespace", "default")
        role = (meta.get("labels") or {}).get(names.LABEL_ROLE, "job")
        self.report(f"{role}: running Job {name}")
        started = time.monotonic()
        failure = run_job(job, namespace, self.workdir / "logs" / f"{name}.log")
        outcome = "failed" if failure is not None else "succeeded"
        self.report(f"{role}: Job {name} {outcome} in {time.monotonic() - started:.1f}s")
        condition = (
            {"type": "Complete", "status": "True"}
            if failure is None
            else {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": failure}
        )
        with contextlib.suppress(ApiError):  # deleted while it ran: a newer generation superseded it
            self.store.patch_status("batch/v1", "Job", namespace, name, {"conditions": [condition]})

    # -- Deployments -----------------------------------------------------------------------------------

    def _add(self, serving: Sequence[Mapping[str, Any]]) -> None:
        """A Shard for every new Deployment: every stage's balancer first (a stage's template needs
        its successor's address)."""
        new = [d for d in serving if d["metadata"]["name"] not in self._deployments]
        for deployment in new:
            name = deployment["metadata"]["name"]
            if _shard(deployment) != 0 and name not in self._stage_balancers:
                self._stage_balancers[name] = self.host.start(name)
        for deployment in new:
            index = _shard(deployment)
            name = deployment["metadata"]["name"]
            balancer = self.endpoint if index == 0 else self._stage_balancers[name]
            template = self._template(deployment)
            if template is None:
                continue  # its next stage's Deployment is not in the store yet: the next pass
            shard = Shard(
                index,
                template,
                balancer,
                self.host,
                self.report,
                on_retire=self._retiring,
                routable=index != 0,
            )
            labels = deployment["metadata"]["labels"]
            revision = (int(labels[names.LABEL_GENERATION]), int(labels.get(names.LABEL_REVISION, 0)))
            self._deployments[name] = _Deployment(shard, revision)
            if index != 0:
                self.report(f"serving: shard {index} ({name}) balancer on {balancer.url}")

    def _scale(self, deployment: Mapping[str, Any]) -> None:
        entry = self._deployments[deployment["metadata"]["name"]]
        shard = entry.shard
        if not _backing_off(shard):
            shard.scale_to(int(deployment["spec"].get("replicas", 1)))
        self._write_status(deployment, (len(shard.active()), len(shard.ready())), entry)

    def _retire(self, present: set[str]) -> None:
        """Close the shards whose Deployments are gone, by revision, first stage first."""
        gone: dict[Revision, list[Shard]] = {}
        for name in [n for n in self._deployments if n not in present]:
            entry = self._deployments.pop(name)
            gone.setdefault(entry.revision, []).append(entry.shard)
            self._stage_balancers.pop(name, None)
        for shards in gone.values():
            shards.sort(key=lambda s: s.index)
            for shard in shards:
                self._stopping += shard.close()
            self.retired.append(shards)
            if self.on_retired is not None:
                self.on_retired(shards)

    def _write_status(
        self, deployment: Mapping[str, Any], counts: tuple[int, int], entry: _Deployment | None = None
    ) -> None:
        written = entry.written if entry is not None else _written(deployment)
        if written == counts:
            return
        replicas, ready = counts
        meta = deployment["metadata"]
        status = {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready}
        try:
            self.store.patch_status("apps/v1", "Deployment", meta.get("namespace"), meta["name"], status)
        except ApiError:
            return
        if entry is not None:
            entry.written = counts

    def _live_revision(self) -> Revision | None:
        """The (generation, revision) whose first stage clients reach: the selector of the front's
        upstream Service, else of the endpoint Service."""
        for name in (names.live_service(self.owner), names.endpoint_service(self.owner)):
            service = self.store.get("v1", "Service", self.owner.namespace, name)
            if service is None:
                continue
            selector = service["spec"].get("selector") or {}
            if selector.get(names.LABEL_ROLE) == "serving":
                return int(selector[names.LABEL_GENERATION]), int(selector.get(names.LABEL_REVISION, 0))
        return None

    def _template(self, deployment: Mapping[str, Any]) -> ReplicaTemplate | None:
        """The Deployment's pod template as a local process: loopback host, the next stage's balancer
        (None while that stage has none)."""
        container = processes.only_container(deployment["spec"]["template"])
        argv = processes.with_flag(processes.local_argv(container["command"]), "--host", "127.0.0.1")
        if "--next-stage" in argv:
            next_stage = self._stage_url(argv[argv.index("--next-stage") + 1])
            if next_stage is None:
                return None
            argv = processes.with_flag(argv, "--next-stage", next_stage)
        env = processes.local_env(container, self.owner.namespace)
        # The pod's emptyDir: here one folder of the run, shared by every replica, so a replica
        # started after the first trusts the files the first one hashed.
        if pod_specs.VERIFY_CACHE_ENV in env:
            env[pod_specs.VERIFY_CACHE_ENV] = str(self.workdir / "verify-cache")
        threads = processes.cpu_limit(container)
        if threads is not None and "--intra-op-threads" not in argv:
            # In a pod the server reads this from its cgroup; here every replica would take the machine.
            env.setdefault(THREADS_ENV, str(threads))
        return ReplicaTemplate(deployment["metadata"]["name"], tuple(argv), env, self.workdir / "logs")

    def _stage_url(self, cluster_url: str) -> str | None:
        """The local balancer playing the Service a cluster URL names (``http://<service>.<ns>.svc:port``)."""
        service = cluster_url.split("://", 1)[-1].split(".", 1)[0].split(":", 1)[0]
        balancer = self._stage_balancers.get(service)
        return None if balancer is None else balancer.url

    def _retiring(self, replica: Any) -> None:
        if self.on_retire is not None:
            self.on_retire(replica)

    def _demand(self) -> None:
        if self.on_demand is not None:
            self.on_demand()

    # -- views -----------------------------------------------------------------------------------------

    def shards(self, revision: Revision | None = None) -> list[Shard]:
        """The running shards of `revision` (default: the live one), by index."""
        with self._lock:
            wanted = self._live_revision() if revision is None else revision
            if wanted is None and self._deployments:
                wanted = max(entry.revision for entry in self._deployments.values())
            found = [e.shard for e in self._deployments.values() if e.revision == wanted]
        return sorted(found, key=lambda s: s.index)

    def running(self) -> list[Shard]:
        """Every shard whose Deployment exists, of every revision."""
        with self._lock:
            return [entry.shard for entry in self._deployments.values()]

    def failures(self) -> list[str]:
        """Why replicas failed to start, for every running shard."""
        return [failure for shard in self.running() for failure in shard.failures]

    def stop(self) -> None:
        """Stop watching, drain every shard (first stage first), stop the replicas, then the balancers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            shards = sorted(self.running(), key=lambda s: s.index)
            stopping = [*self._stopping, *(thread for shard in shards for thread in shard.close())]
        for thread in stopping:
            thread.join(EXIT_TIMEOUT_SECONDS + 5)
        self.host.close()


def _role(deployment: Mapping[str, Any]) -> str:
    return str((deployment["metadata"].get("labels") or {}).get(names.LABEL_ROLE, ""))


def _shard(deployment: Mapping[str, Any]) -> int:
    return int(deployment["metadata"]["labels"][names.LABEL_SHARD])


def _finished(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _written(deployment: Mapping[str, Any]) -> tuple[int, int] | None:
    status = deployment.get("status") or {}
    if "replicas" not in status:
        return None
    return int(status["replicas"]), int(status.get("readyReplicas", 0))


def _backing_off(shard: Shard) -> bool:
    """Whether a shard whose replicas failed to start waits before the next try (the delay doubles)."""
    if shard.failed_at is None:
        return False
    delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (len(shard.failures) - 1))
    return time.monotonic() - shard.failed_at < delay


def run_job(job: Mapping[str, Any], namespace: str, log_path: Path) -> str | None:
    """Run every pod a Job asks for (an Indexed Job's completions at once) and wait for them; None when
    all succeeded, else the last line the output ended with.

    An Indexed Job's index that fails is run again up to ``backoffLimitPerIndex`` times, as the Job
    controller does (a batch worker resumes from the shards it finished); other Jobs run once, so a
    failing pipeline step fails at once on this machine. Each pod's output goes to `log_path`; the
    first pod's is also shown here as it runs. The ranks of an Indexed Job meet through a file beside
    the log, not a port picked here and released before rank 0 binds it.
    """
    spec = job["spec"]
    container = processes.only_container(spec["template"])
    argv = processes.local_argv(container["command"])
    indexed = spec.get("completionMode") == "Indexed"
    completions = int(spec.get("completions", 1)) if indexed else 1
    attempts = 1 + (int(spec.get("backoffLimitPerIndex", 0)) if indexed else 0)
    rendezvous_file = log_path.with_suffix(".rendezvous")
    rendezvous_file.unlink(missing_ok=True)
    rendezvous = {RENDEZVOUS_FILE_ENV: str(rendezvous_file)} if completions > 1 else {}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    codes: dict[int, int] = {}

    def run_index(index: int, log: IO[bytes]) -> None:
        for _ in range(attempts):
            # Kubernetes sets the index in every pod of an Indexed Job, whatever the container declares.
            pod = {COMPLETION_INDEX_ENV: str(index)} if indexed else {}
            env = processes.local_env(container, namespace, index, {**rendezvous, **pod})
            worker = processes.start(argv, env, subprocess.PIPE)
            _copy(worker.stdout, log, index == 0)
            codes[index] = worker.wait()
            if codes[index] == 0:
                return

    with log_path.open("ab") as log:
        pods = [threading.Thread(target=run_index, args=(i, log), daemon=True) for i in range(completions)]
        for pod in pods:
            pod.start()
        for pod in pods:
            pod.join()
    return None if all(codes.get(i) == 0 for i in range(completions)) else last_line(log_path)


def _copy(source: IO[bytes] | None, log: IO[bytes], show: bool) -> None:
    if source is None:
        return
    for chunk in iter(lambda: source.read1(4096), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        if show:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
