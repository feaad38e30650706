"""`frugal up`'s engine: the operator's own decisions, carried out on this machine.

The loop is the controller's: :func:`frugal.operator.decision.decide.decide` says which Jobs and
Deployments should exist for the observed state; this module runs each Job's container to
completion (a local kubelet), feeds the outcome back as the observed state, and finally serves each
shard from its Deployment's pod template: replica processes behind a local balancer on a stable port
(:mod:`frugal.operator.local.replicas`), which the local autoscaler resizes. A pipeline that works
here works with the same manifests in a cluster.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import artifact_files
from frugal.operator.decision.conditions import Job, JobState, Phase
from frugal.operator.decision.decide import ClusterState, Decision, Settings, decide
from frugal.operator.decision.revisions import Rollover
from frugal.operator.local import processes
from frugal.operator.local.balancer import BalancerHost, Hold
from frugal.operator.local.replicas import (
    EXIT_TIMEOUT_SECONDS,
    READY_TIMEOUT_SECONDS,
    ReplicaFailed,
    ReplicaTemplate,
    Shard,
    last_line,
    start_replicas,
)
from frugal.operator.manifests import names, pod_specs
from frugal.operator.manifests.storage import locate
from frugal.operator.telemetry import OperatorMetrics

MAX_ROUNDS = 8
THREADS_ENV = "FRUGAL_INTRA_OP_THREADS"

Report = Callable[[str], None]


class LocalRunError(RuntimeError):
    """The pipeline stopped; the message says at which stage and why (from the operator's conditions)."""


@dataclass
class Served:
    """What is running once the pipeline reaches the Serving phase."""

    decision: Decision
    shards: list[Shard]
    artifacts: Path
    model_name: str
    decision_source_uri: str
    host: BalancerHost
    # Set by a balancer holding a request while its shard has no replica (the autoscaler wakes on it).
    demand: threading.Event = field(default_factory=threading.Event)
    # The shards of options served before a re-planning rollover, in order, and their stopping threads.
    retired: list[list[Shard]] = field(default_factory=list)
    stopping: list[threading.Thread] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        """Shard 0's balancer: the address users call, whatever the replicas behind it."""
        return self.shards[0].url

    def alive(self) -> bool:
        """No replica died on its own (a shard scaled to zero has none to die)."""
        return all(shard.alive() or not shard.active() for shard in self.shards)

    def held_requests(self) -> int:
        return sum(shard.balancer.held for shard in self.shards)

    def wake_waits(self) -> list[float]:
        """Seconds each request held at zero replicas waited for the first replica."""
        return [wait for shard in self.shards[:1] for wait in shard.balancer.waits]

    def stop(self) -> None:
        """Drain every shard front first (a stage stops only when nothing upstream needs it), stop the
        replicas, then the balancers."""
        stopping = [*self.stopping, *(thread for shard in self.shards for thread in shard.close())]
        for thread in stopping:
            thread.join(EXIT_TIMEOUT_SECONDS + 5)
        self.host.close()


@dataclass
class LocalCluster:
    """Observed state of one ModelDeployment on this machine."""

    md: ModelDeploymentSpec
    profiles: Mapping[str, HardwareProfileSpec]
    workdir: Path
    report: Report
    state: ClusterState = field(default_factory=ClusterState)
    # The operator's series of this run (frugal up --prometheus-targets): each pass's time and phase.
    metrics: OperatorMetrics | None = None

    @property
    def settings(self) -> Settings:
        # On one machine file:// is this machine's own directories: what frugal up is for.
        return Settings(image="local", storage_uri=f"file://{self.workdir / 'artifacts'}", allow_host_path=True)

    def run(self, port: int = 0) -> Served:
        """Run the pipeline's Jobs, then serve; `port` is the endpoint's (0: any free port)."""
        return self._serve(self.plan(), port)

    def plan(self) -> Decision:
        """Run the pipeline's Jobs (compression, profiling) until the plan is made; the decision says
        what to serve and where the artifacts are."""
        for _ in range(MAX_ROUNDS):
            decision = self._decide(self.state)
            jobs = [o for o in decision.apply if o["kind"] == "Job"]
            if jobs:
                for job in jobs:
                    self._run_job(job)
                continue
            if decision.assessment.phase is Phase.FAILED or decision.selection is None:
                raise LocalRunError(_explain(decision))
            return decision
        raise LocalRunError("the pipeline did not settle: " + _explain(decision))

    def _decide(self, state: ClusterState, rollover: Rollover | None = None) -> Decision:
        """One reconcile pass: the operator's decision for `state`, timed and its phase exported."""
        started = time.perf_counter()
        decision = decide(self.md, self.profiles, state, self._artifacts(), self.settings, rollover)
        if self.metrics is not None:
            self.metrics.duration.observe(time.perf_counter() - started)
            failed = {"compression": int(state.compression.state is JobState.FAILED)}
            self.metrics.assessed(self.md.owner.namespace, self.md.owner.name, decision.assessment.phase, failed)
        return decision

    def _artifacts(self) -> artifact_files.Artifacts | artifact_files.ArtifactError | None:
        if self.state.compression.state is not JobState.SUCCEEDED:
            return None
        directory = locate(self.settings.storage_uri, self.md.owner).operator_path
        assert directory is not None  # file:// storage is always readable here
        try:
            return artifact_files.read(directory, self.md.serving_profiles)
        except artifact_files.ArtifactError as error:
            return error

    def _run_job(self, job: Mapping[str, Any]) -> None:
        name = job["metadata"]["name"]
        role = job["metadata"]["labels"][names.LABEL_ROLE]
        self.report(f"{role}: running Job {name}")
        started = time.monotonic()
        outcome = run_job(job, self.md.owner.namespace, self.workdir / "logs" / f"{name}.log")
        self.report(f"{role}: Job {name} {outcome.state.lower()} in {time.monotonic() - started:.1f}s")
        if role == "compression":
            self.state = dataclasses.replace(self.state, compression=outcome)
        else:
            profile = job["metadata"]["labels"][names.LABEL_PROFILE]
            profiling = {**self.state.profiling, profile: outcome}
            self.state = dataclasses.replace(self.state, profiling=profiling)

    def _serve(self, decision: Decision, port: int = 0) -> Served:
        # Shards only: here the first shard's balancer is the front (it holds requests at zero).
        deployments = _shard_deployments(decision)
        host = BalancerHost()
        demand = threading.Event()
        # With minReplicas 0 a shard may have no replica: its balancer holds requests until one is ready.
        hold = Hold(max_requests=self.md.max_queue_size) if self.md.min_replicas == 0 else None
        # Every shard's balancer first: each stage's template needs its successor's address.
        balancers = [
            host.start(d["metadata"]["name"], port if i == 0 else 0, hold, demand.set)
            for i, d in enumerate(deployments)
        ]
        urls = {d["metadata"]["name"]: b.url for d, b in zip(deployments, balancers, strict=True)}
        shards = [
            Shard(
                int(d["metadata"]["labels"][names.LABEL_SHARD]), self._template(d, urls), b, host, self.report
            )
            for d, b in zip(deployments, balancers, strict=True)
        ]
        for shard in shards:
            self.report(f"serving: shard {shard.index} balancer on {shard.url}")
        served = Served(
            decision,
            shards,
            self._artifact_dir(decision),
            self.md.model_name,
            self.md.model_uri,
            host,
            demand,
        )
        initial = self.md.initial_replicas
        try:
            start_replicas(shards, [initial] * len(shards), READY_TIMEOUT_SECONDS)
        except ReplicaFailed as error:
            served.stop()
            raise LocalRunError(f"serving: {error}") from error
        self.state = dataclasses.replace(
            self.state,
            shard_replicas={s.index: initial for s in shards},
            shard_ready={s.index: initial for s in shards},
            live_generation=self.md.owner.generation,
        )
        return served

    def roll_over(self, served: Served, rollover: Rollover) -> float:
        """Serve `rollover`'s option instead of the running one, as the operator rolls over in a
        cluster: the new revision's shards start beside the running ones (later stages first, each
        behind a balancer of its own), its first stage's replicas join the endpoint's balancer once
        ready, and only then do the old replicas leave, finish the requests they hold and stop,
        front stage first. Returns the seconds until the old replicas had left the balancers (their
        processes stop in the background); the old option keeps serving if the new one fails to
        start (LocalRunError)."""
        started = time.monotonic()
        fresh = dataclasses.replace(self.state, shard_replicas={}, shard_ready={})
        decision = self._decide(fresh, rollover)
        if decision.selection is None:
            raise LocalRunError(_explain(decision))
        deployments = _shard_deployments(decision)
        endpoint = served.shards[0]
        balancers = [endpoint.balancer] + [served.host.start(d["metadata"]["name"]) for d in deployments[1:]]
        urls = {d["metadata"]["name"]: b.url for d, b in zip(deployments, balancers, strict=True)}
        shards = [
            Shard(
                int(d["metadata"]["labels"][names.LABEL_SHARD]),
                self._template(d, urls),
                b,
                served.host,
                self.report,
                on_retire=endpoint.on_retire,
            )
            for d, b in zip(deployments, balancers, strict=True)
        ]
        count = rollover.replicas
        try:
            # A stage's replicas forward to the next stage: the later stages are ready first.
            start_replicas(shards[1:], [count] * (len(shards) - 1), READY_TIMEOUT_SECONDS)
            start_replicas(shards[:1], [count], READY_TIMEOUT_SECONDS)
        except ReplicaFailed as error:
            for thread in [t for shard in shards for t in shard.close()]:
                thread.join(EXIT_TIMEOUT_SECONDS + 5)
            raise LocalRunError(f"re-planning: {error}") from error
        retired, served.shards, served.decision = served.shards, shards, decision
        for shard in retired:  # front stage first: a stage closes once nothing upstream calls it
            served.stopping += shard.close()  # out of its balancer, its requests answered; then stopped
        served.retired.append(retired)
        self.state = dataclasses.replace(
            self.state,
            shard_replicas={s.index: count for s in shards},
            shard_ready={s.index: count for s in shards},
            live_revision=rollover.revision,
        )
        return time.monotonic() - started

    def _artifact_dir(self, decision: Decision) -> Path:
        assert decision.location is not None and decision.location.operator_path is not None
        return decision.location.operator_path

    def _template(self, deployment: Mapping[str, Any], urls: Mapping[str, str]) -> ReplicaTemplate:
        """The Deployment's pod template as a local process: loopback host, the next stage's balancer."""
        container = processes.only_container(deployment["spec"]["template"])
        argv = processes.with_flag(processes.local_argv(container["command"]), "--host", "127.0.0.1")
        if "--next-stage" in argv:
            argv = processes.with_flag(
                argv, "--next-stage", _local_url(argv[argv.index("--next-stage") + 1], urls)
            )
        env = processes.local_env(container, self.md.owner.namespace)
        # The pod's emptyDir: here one folder of the run, shared by every replica, so a replica
        # started after the first trusts the files the first one hashed.
        if pod_specs.VERIFY_CACHE_ENV in env:
            env[pod_specs.VERIFY_CACHE_ENV] = str(self.workdir / "verify-cache")
        threads = processes.cpu_limit(container)
        if threads is not None and "--intra-op-threads" not in argv:
            # In a pod the server reads this from its cgroup; here every replica would take the machine.
            env.setdefault(THREADS_ENV, str(threads))
        return ReplicaTemplate(deployment["metadata"]["name"], tuple(argv), env, self.workdir / "logs")


# The compression component's ranks meet through this file when it is set (no port to pick).
RENDEZVOUS_FILE_ENV = "FRUGAL_RENDEZVOUS_FILE"


def run_job(job: Mapping[str, Any], namespace: str, log_path: Path) -> Job:
    """Run every pod a Job asks for (an Indexed Job's completions at once) and wait for them.

    Each pod's output goes to `log_path`; the first pod's is also shown here as it runs. The ranks of
    an Indexed Job meet through a file beside the log, not a port picked here and released before
    rank 0 binds it.
    """
    spec = job["spec"]
    container = processes.only_container(spec["template"])
    argv = processes.local_argv(container["command"])
    completions = int(spec.get("completions", 1)) if spec.get("completionMode") == "Indexed" else 1
    rendezvous_file = log_path.with_suffix(".rendezvous")
    rendezvous_file.unlink(missing_ok=True)
    rendezvous = {RENDEZVOUS_FILE_ENV: str(rendezvous_file)} if completions > 1 else {}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        workers = [
            processes.start(
                argv, processes.local_env(container, namespace, index, rendezvous), subprocess.PIPE
            )
            for index in range(completions)
        ]
        copiers = [
            threading.Thread(target=_copy, args=(p.stdout, log, index == 0), daemon=True)
            for index, p in enumerate(workers)
        ]
        for copier in copiers:
            copier.start()
        codes = [worker.wait() for worker in workers]
        for copier in copiers:
            copier.join(timeout=5)
    name = job["metadata"]["name"]
    if all(code == 0 for code in codes):
        return Job(JobState.SUCCEEDED, name=name)
    return Job(JobState.FAILED, message=last_line(log_path), name=name)


def _copy(source: IO[bytes] | None, log: IO[bytes], show: bool) -> None:
    if source is None:
        return
    for chunk in iter(lambda: source.read1(4096), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        if show:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()


def _shard_deployments(decision: Decision) -> list[dict[str, Any]]:
    """The decision's serving Deployments, by shard index."""
    return sorted(
        (
            o
            for o in decision.apply
            if o["kind"] == "Deployment" and o["metadata"]["labels"].get(names.LABEL_ROLE) == "serving"
        ),
        key=lambda d: int(d["metadata"]["labels"][names.LABEL_SHARD]),
    )


def _local_url(cluster_url: str, urls: Mapping[str, str]) -> str:
    host = cluster_url.split("://", 1)[-1].split(".", 1)[0].split(":", 1)[0]
    if host not in urls:
        raise LocalRunError(f"no local process serves {cluster_url}")
    return urls[host]


def _explain(decision: Decision) -> str:
    failing = [c for c in decision.assessment.conditions if c.status is False and c.message]
    detail = "; ".join(f"{c.type}: {c.reason}: {c.message}" for c in failing)
    return f"phase {decision.assessment.phase}: {decision.assessment.message}" + (
        f" ({detail})" if detail else ""
    )
