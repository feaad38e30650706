"""One reconcile pass: observe the cluster and the artifacts, decide (pure), apply, write status.

Status is written only when it changed; an Event is emitted for every condition that changes status
or reason and for every phase change. A user error (missing profile, failed Job, no feasible
option) ends in a condition, never an exception, so kopf does not retry in a loop.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    SpecError,
    owner_of,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.control.applied_objects import AppliedObjects
from frugal.operator.control.artifact_access import artifact_directory, remove_prefix
from frugal.operator.control.port import (
    AUTOSCALER_FIELD_MANAGER,
    FIELD_MANAGER,
    JOB_KINDS,
    POLICY_KINDS,
    SERVING_KINDS,
    ApiError,
    ClusterPort,
    delete_all,
    unreachable,
)
from frugal.operator.control.workqueue import WorkQueue
from frugal.operator.decision import artifact_files, decide, pod_problems, revisions, status_writes
from frugal.operator.decision.conditions import (
    ABSENT_JOB,
    FAILURE_REASONS,
    Assessment,
    Job,
    JobState,
    Observed,
    Reason,
    as_status,
    conditions,
)
from frugal.operator.decision.planner import Option
from frugal.operator.manifests import names, serving_objects
from frugal.operator.manifests.events import desired_event
from frugal.operator.manifests.storage import NotConfined, OwnPrefix
from frugal.operator.telemetry import OperatorMetrics
from frugal.schema.artifact_format import ArtifactError
from frugal.serving.server.failures import one_line

log = logging.getLogger(__name__)

# The Event of a deletion that leaves the artifacts: their directory may not be this ModelDeployment's alone.
ARTIFACTS_KEPT = "ArtifactsKept"
Emit = Callable[[str, str, str], None]  # (type: Normal|Warning, reason, message)
# How a generation's artifact files are read (the directory, the profiles to read results of).
ReadArtifacts = Callable[[artifact_files.Folder, Sequence[str]], artifact_files.Artifacts]
WARNING_REASONS = FAILURE_REASONS | {Reason.REPLICAS_UNAVAILABLE}
# Condition types another writer of the status owns (the autoscaler's).
FOREIGN_CONDITIONS = status_writes.AUTOSCALER_CONDITIONS


# Settled objects are re-read and re-applied this often even when no event says anything changed.
DRIFT_SECONDS = 600.0
# Passes over different ModelDeployments that run at once (kopf ran its handlers in a pool of about
# this size), and how often an idle worker looks whether it was told to stop.
WORKERS = 4
WORKER_POLL_SECONDS = 0.5
# Kinds applied on every pass, so an unchanged one can be skipped (Jobs are only built when absent).
SKIPPABLE_KINDS = frozenset(
    {"Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "NetworkPolicy"}
    | {"ServiceAccount", "Role", "RoleBinding"}  # the scale-to-zero front's identity
)
# The scale-to-zero front's identity (one of each per ModelDeployment, named names.front_identity).
FRONT_IDENTITY_KINDS = (
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
)
# Phases that wait on something the operator watches (its Jobs, its Deployments, and their pods in
# trouble: handlers.py) or on nothing.
SETTLED_PHASES = frozenset({"Compressing", "Profiling", "Deploying", "Serving", "Failed"})


class Reconciler:
    def __init__(
        self,
        cluster: ClusterPort,
        settings: decide.Settings,
        metrics: OperatorMetrics | None = None,
        drift_seconds: float = DRIFT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        read_artifacts: ReadArtifacts = artifact_files.read,
        keep_decisions: bool = False,
    ):
        """`keep_decisions`: remember each ModelDeployment's last decision (`last_decision`), which
        `frugal up` reads; the operator does not, since a decision holds every object it applies and
        the plan (tens of KB per ModelDeployment; BENCHMARKS.md, operator memory)."""
        self.cluster = cluster
        self.keep_decisions = keep_decisions
        self.read_artifacts = read_artifacts
        self.settings = settings
        self.metrics = metrics
        self.drift_seconds = drift_seconds
        self._clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._pod_monitors: bool | None = None
        self._applied = AppliedObjects(drift_seconds, clock)
        # When each ModelDeployment was last passed over, and whether that pass left it settled.
        self._passes: dict[tuple[str, str], tuple[float, bool]] = {}
        self.queue: WorkQueue[tuple[str, str]] = WorkQueue()
        self._decisions: dict[tuple[str, str], decide.Decision] = {}

    def last_decision(self, namespace: str, name: str) -> decide.Decision | None:
        """The decision of the last pass over `namespace/name` (what it serves, its plan), if any."""
        return self._decisions.get((namespace, name))

    def due(self) -> list[tuple[str, str]]:
        """The ModelDeployments the periodic pass reconciles now: those the last pass left unsettled
        (or failed on), and settled ones whose last pass is `drift_seconds` old. A settled
        ModelDeployment costs no API request in between; its children's events wake it."""
        with self._guard:
            passes = list(self._passes.items())
        return resync_due(passes, self._clock(), self.drift_seconds)

    def enqueue(self, namespace: str, name: str) -> None:
        """Have a worker of `run` pass over `namespace/name` (once, however often it is asked)."""
        self.queue.add((namespace, name))

    def run(self, interval: float, stop: threading.Event, workers: int = WORKERS) -> None:
        """Until `stop`: pass over what is queued, `workers` at a time, and every `interval` seconds
        queue what `due` names.

        The watch handlers only queue names (handlers.py), so no body waits for a worker; and the
        periodic pass is this one loop, where a kopf timer per object would keep a task and the last
        body of each (about 65 KB per ModelDeployment; BENCHMARKS.md, operator memory)."""
        threads = [
            threading.Thread(target=self._work, args=(stop,), name=f"reconcile-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        while not stop.wait(interval):
            for key in self.due():
                self.queue.add(key)
        for thread in threads:
            thread.join()

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            key = self.queue.get(timeout=WORKER_POLL_SECONDS)
            if key is None:
                continue
            try:
                self.reconcile_named(*key)
            except Exception as error:
                if unreachable(error):  # an API server restarting: one line, not a traceback
                    log.warning("reconcile of %s/%s failed, tried again at the next periodic pass: %s",
                                *key, one_line(error))  # fmt: skip
                else:
                    log.exception("reconcile of %s/%s failed; tried again at the next periodic pass", *key)
            finally:
                self.queue.done(key)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """The lock every writer of `namespace/name`'s status holds (the reconciler and the autoscaler)."""
        return self._lock(namespace, name)

    def reconcile_named(self, namespace: str, name: str) -> Assessment | None:
        """Reconcile the ModelDeployment `namespace/name` (read fresh under its lock)."""
        with self._lock(namespace, name):
            body = self.cluster.get(API_VERSION, "ModelDeployment", namespace, name)
            if body is None:
                with self._guard:
                    self._passes.pop((namespace, name), None)
                return None
            if body["metadata"].get("deletionTimestamp"):
                return None
            return self._timed(body, self.poster(body))

    def reconcile(self, body: Mapping[str, Any], emit: Emit | None = None) -> Assessment | None:
        """Bring `body`'s children and status in line with its spec; Events go to `emit` (or the API).

        Handlers run concurrently (timer, child events, spec changes): each pass takes the object's
        lock and re-reads it, so status comparisons and Events never work from a stale copy.
        """
        owner = owner_of(body)
        if emit is None:
            return self.reconcile_named(owner.namespace, owner.name)
        with self._lock(owner.namespace, owner.name):
            return self._timed(body, emit)

    def _timed(self, body: Mapping[str, Any], emit: Emit) -> Assessment:
        owner = owner_of(body)
        key, when = (owner.namespace, owner.name), self._clock()
        with self._guard:
            self._passes[key] = (when, False)
        started = time.perf_counter()
        try:
            assessment = self._reconcile(body, emit)
            with self._guard:
                self._passes[key] = (when, assessment.phase.value in SETTLED_PHASES)
            return assessment
        except Exception:
            if self.metrics:
                self.metrics.errors.labels(namespace=owner_of(body).namespace).inc()
            raise
        finally:
            if self.metrics:
                self.metrics.duration.observe(time.perf_counter() - started)

    def _reconcile(self, body: Mapping[str, Any], emit: Emit) -> Assessment:
        try:
            md = parse_model_deployment(body)
        except SpecError as error:
            owner = owner_of(body)
            assessment = conditions(Observed(owner.generation, spec_error=str(error)))
            self._write_status(body, assessment, {}, emit)
            if self.metrics:
                self.metrics.assessed(owner.namespace, owner.name, assessment.phase, {})
            return assessment
        md, rollover = revisions.as_served(md, ModelDeploymentStatus.from_body(body))
        profiles = self._profiles(decide.needed_profiles(md))
        state = self._observe(md)
        found = self._artifacts(md, profiles, state)
        decision = decide.decide(md, profiles, state, found, self.settings, rollover)
        if self.keep_decisions:
            self._decisions[(md.owner.namespace, md.owner.name)] = decision
        for deployment in (o for o in decision.apply if o["kind"] == "Deployment"):
            shard = deployment["metadata"]["labels"].get(names.LABEL_SHARD)
            if shard is not None and int(shard) not in state.shard_replicas:
                self._applied.forget_object(
                    "apps/v1", "Deployment", md.owner.namespace, deployment["metadata"]["name"]
                )
        in_the_way = self._not_ours([*decision.apply, *decision.scale], md.owner.uid)
        kept_in_place: list[str] = []
        rejected = self._apply_all(
            decision.apply, skip=in_the_way, kept_in_place=kept_in_place
        ) or self._apply_all(decision.scale, AUTOSCALER_FIELD_MANAGER, skip=in_the_way)
        status_fields = decision.status
        if kept_in_place and decision.selection is not None:
            replacement = self._replacement(md, body, decision.selection, kept_in_place)
            status_fields = {**decision.status, "replan": replacement}
            emit("Normal", revisions.REPLACE_REASON, str(replacement["message"])[:1024])
        for api_version, kind, name in decision.delete:
            self.cluster.delete(api_version, kind, md.owner.namespace, name)
            self._applied.forget_object(api_version, kind, md.owner.namespace, name)
        assessment = decision.assessment
        if rejected and decision.observed is not None:
            assessment = conditions(dataclasses.replace(decision.observed, apply_error=rejected))
        elif in_the_way and decision.observed is not None:
            assessment = conditions(
                dataclasses.replace(decision.observed, not_owned=_in_the_way_message(md, in_the_way))
            )
        elif decision.prune_superseded:
            self._prune_superseded(md)
        self._write_status(body, assessment, status_fields, emit)
        self._record_metrics(md, decision, assessment, state)
        return decision.assessment

    def _not_ours(self, objects: Sequence[Mapping[str, Any]], owner_uid: str) -> list[tuple[str, str]]:
        """(kind, name) of each object to apply that exists already and is not this ModelDeployment's
        (no owner reference to it): server-side apply with force would silently adopt it. Checked
        once per object this process has not applied yet; what it applied before is known to be ours."""
        found = []
        for obj in objects:
            meta = obj["metadata"]
            if (obj["kind"], meta["name"]) in found or self._applied.known(obj):
                continue
            existing = self.cluster.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
            if existing is None:
                continue
            references = existing["metadata"].get("ownerReferences") or []
            if not any(reference.get("uid") == owner_uid for reference in references):
                found.append((obj["kind"], meta["name"]))
        return found

    def _apply_all(
        self,
        objects: Sequence[Mapping[str, Any]],
        manager: str = FIELD_MANAGER,
        skip: Sequence[tuple[str, str]] = (),
        kept_in_place: list[str] | None = None,
    ) -> str | None:
        """Apply every object that differs from what this operator last applied (an object is applied
        again after `drift_seconds`, which also undoes hand edits), except those in `skip`; an object
        the API server refuses (4xx) becomes a message, not a crash loop.

        An existing object whose immutable fields differ (what an earlier operator version wrote) is
        not a failure: a Job keeps running or stays finished as it is (its outcome is what counts); a
        serving Deployment is named in `kept_in_place` and the rest of the serving shards' objects
        are left as they are, so what serves keeps serving until the caller replaces it under a
        new revision (:func:`revisions.replacement_status`)."""
        rejected = []
        for obj in objects:
            if (obj["kind"], obj["metadata"]["name"]) in skip:
                continue
            serving = (obj["metadata"].get("labels") or {}).get(names.LABEL_ROLE) == "serving"
            if kept_in_place and serving:
                continue
            if obj["kind"] in SKIPPABLE_KINDS and not self._applied.changed(obj, manager):
                continue
            try:
                self.cluster.apply(obj, manager)
                self._applied.remember(obj, manager)
            except ApiError as error:
                if error.status not in (400, 403, 422):
                    raise
                what = f"{obj['kind']} {obj['metadata']['name']}"
                if error.status == 422 and revisions.refused_in_place(obj["kind"], str(error)):
                    if obj["kind"] == "Job":
                        log.info("%s: kept as it is (%s)", what, error)
                        continue
                    if serving and kept_in_place is not None:
                        kept_in_place.append(what)
                        continue
                rejected.append(f"{what}: {error}")
        if not rejected:
            return None
        return "the API server refused " + "; ".join(rejected) + ": check the HardwareProfile and the spec"

    def _replacement(
        self, md: ModelDeploymentSpec, body: Mapping[str, Any], selection: Option, refused: Sequence[str]
    ) -> dict[str, Any]:
        """status.replan of a rollover that replaces the refused serving Deployments, starting the
        new revision at the replicas the first of them runs now."""
        name = refused[0].split(" ", 1)[1]
        existing = self.cluster.get("apps/v1", "Deployment", md.owner.namespace, name) or {}
        replicas = int((existing.get("spec") or {}).get("replicas", md.initial_replicas))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = body.get("status") or {}
        return revisions.replacement_status(md, status, selection, replicas, ", ".join(refused), now)

    def poster(self, body: Mapping[str, Any]) -> Emit:
        """An Emit that posts core/v1 Events about `body` (failures are logged, never raised)."""

        def emit(kind: str, reason: str, message: str) -> None:
            try:
                self.cluster.create(desired_event(body, kind, reason, message))
            except Exception as error:  # an Event that cannot be posted must not fail the reconcile
                log.warning("could not post event %s: %s", reason, error)

        return emit

    def cleanup(self, body: Mapping[str, Any]) -> None:
        """Delete every child (no garbage collector needed) and, unless retained, the artifacts."""
        owner = owner_of(body)
        selector = {names.LABEL_MD: owner.name, names.LABEL_MANAGED_BY: names.MANAGED_BY}
        delete_all(self.cluster, (*SERVING_KINDS, *JOB_KINDS, *POLICY_KINDS), owner.namespace, selector)
        for api_version, kind in FRONT_IDENTITY_KINDS:  # one of each, by name: no list needed
            self.cluster.delete(api_version, kind, owner.namespace, names.front_identity(owner))
        try:
            md = parse_model_deployment(body)
        except SpecError:
            return
        try:
            artifacts = decide.artifacts_to_remove(md, self.settings)
            if isinstance(artifacts, OwnPrefix):
                access = decide.artifact_location(md, self.settings).access
                remove_prefix(self.cluster, artifacts, access, owner.namespace)
            elif artifacts is not None:
                artifacts.check_links()
                shutil.rmtree(artifacts.path, ignore_errors=True)
        except (NotConfined, ArtifactError) as kept:
            log.warning("%s/%s: %s", owner.namespace, owner.name, kept)
            self.poster(body)("Warning", ARTIFACTS_KEPT, str(kept))
        with self._guard:
            self._passes.pop((owner.namespace, owner.name), None)
        self._decisions.pop((owner.namespace, owner.name), None)
        self._applied.forget(owner.namespace, owner.name)
        if self.metrics:
            self.metrics.forget(owner.namespace, owner.name)

    def _profiles(self, wanted: tuple[str, ...]) -> dict[str, HardwareProfileSpec]:
        found = {}
        for name in wanted:
            body = self.cluster.get(API_VERSION, "HardwareProfile", None, name)
            if body is not None:
                found[name] = parse_hardware_profile(body)
        return found

    def _observe(self, md: ModelDeploymentSpec) -> decide.ClusterState:
        ns = md.owner.namespace
        compression = self.job(ns, names.compression_job(md.owner))
        profiling = {p: self.job(ns, names.profiling_job(md.owner, p)) for p in md.serving_profiles}
        replicas: dict[int, int] = {}
        ready: dict[int, int] = {}
        front = False
        # One list of the ModelDeployment's Deployments: the current revision's shards, and its front.
        current = {
            names.LABEL_ROLE: "serving",
            names.LABEL_GENERATION: str(md.owner.generation),
            names.LABEL_REVISION: str(md.owner.revision),
        }
        for deployment in self.cluster.find("apps/v1", "Deployment", ns, {names.LABEL_MD: md.owner.name}):
            labels = deployment["metadata"].get("labels") or {}
            if labels.get(names.LABEL_ROLE) == "front":
                front = True
            elif all(labels.get(key) == value for key, value in current.items()):
                shard = int(labels[names.LABEL_SHARD])
                replicas[shard] = int(deployment["spec"].get("replicas", 1))
                ready[shard] = int((deployment.get("status") or {}).get("readyReplicas", 0))
        live = self._live(md)
        waiting = any(j.state is JobState.RUNNING for j in (compression, *profiling.values())) or any(
            ready.get(shard, 0) < count for shard, count in replicas.items()
        )
        return decide.ClusterState(
            compression,
            profiling,
            replicas,
            ready,
            None if live is None else live.generation,
            0 if live is None else live.revision,
            self._has_pod_monitors(),
            front_exists=front,
            # Only while something waits for pods: a settled ModelDeployment costs no pod list.
            pod_problem=self._pod_problem(md) if waiting else None,
        )

    def _pod_problem(self, md: ModelDeploymentSpec) -> pod_problems.PodProblem | None:
        """The first of this generation's pods that cannot run: unschedulable, no image, OOMKilled."""
        selector = {names.LABEL_MD: md.owner.name, names.LABEL_GENERATION: str(md.owner.generation)}
        return pod_problems.first_problem(self.cluster.find("v1", "Pod", md.owner.namespace, selector))

    def _live(self, md: ModelDeploymentSpec) -> serving_objects.Live | None:
        """The (generation, revision) clients reach: the selector of the front's upstream, else the
        endpoint's."""
        ns = md.owner.namespace
        service = None
        if serving_objects.has_front(md):
            service = self.cluster.get("v1", "Service", ns, names.live_service(md.owner))
        if service is None:
            service = self.cluster.get("v1", "Service", ns, names.endpoint_service(md.owner))
        if service is None:
            return None
        selector = service["spec"]["selector"]
        generation = int(selector.get(names.LABEL_GENERATION, 0))
        if not generation:
            return None
        return serving_objects.Live(generation, int(selector.get(names.LABEL_REVISION, 0)))

    def job(self, namespace: str, name: str) -> Job:
        """The outcome of Job `namespace/name` (a failure with its pod's termination message)."""
        job = self.cluster.get("batch/v1", "Job", namespace, name)
        if job is None:
            return ABSENT_JOB
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                return Job(JobState.SUCCEEDED, name=name)
            if condition.get("type") == "Failed":
                detail = self._termination_message(namespace, name) or condition.get("message", "")
                return Job(
                    JobState.FAILED, f"{condition.get('reason', 'Failed')}: {detail}".strip(": "), name
                )
        return Job(JobState.RUNNING, name=name)

    def _termination_message(self, namespace: str, job: str) -> str:
        for pod in self.cluster.find("v1", "Pod", namespace, {"batch.kubernetes.io/job-name": job}):
            if (killed := pod_problems.oom_killed(pod)) is not None:
                return killed
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                message = ((status.get("state") or {}).get("terminated") or {}).get("message")
                if message:
                    return str(message).strip().splitlines()[-1][:1024]
        return ""

    def _artifacts(
        self,
        md: ModelDeploymentSpec,
        profiles: Mapping[str, HardwareProfileSpec],
        state: decide.ClusterState,
    ) -> artifact_files.Artifacts | artifact_files.ArtifactError | None:
        if state.compression.state is not JobState.SUCCEEDED or any(
            p not in profiles for p in decide.needed_profiles(md)
        ):
            return None
        location = decide.artifact_location(md, self.settings)
        try:
            directory = artifact_directory(self.cluster, location, md.owner.namespace)
            if directory is None:
                return None
            return self.read_artifacts(directory, md.serving_profiles)
        except artifact_files.ArtifactError as error:
            return error

    def _prune_superseded(self, md: ModelDeploymentSpec) -> None:
        """Once the current (generation, revision) is live: every object of older generations, and the
        shards of this generation's other revisions (its Jobs stay: they are its artifacts' record)."""
        ns, generation = md.owner.namespace, str(md.owner.generation)
        selector = {names.LABEL_MD: md.owner.name, names.LABEL_MANAGED_BY: names.MANAGED_BY}
        deleted = delete_all(self.cluster,
            (*SERVING_KINDS, *JOB_KINDS), ns, selector, keep={names.LABEL_GENERATION: generation}
        )
        shards = {**selector, names.LABEL_ROLE: "serving", names.LABEL_GENERATION: generation}
        deleted += delete_all(self.cluster,
            SERVING_KINDS, ns, shards, keep={names.LABEL_REVISION: str(md.owner.revision)}
        )
        if deleted:
            self._applied.forget(md.owner.namespace, md.owner.name)

    def _record_metrics(
        self, md: ModelDeploymentSpec, decision: decide.Decision, assessment: Assessment, state: decide.ClusterState
    ) -> None:
        if self.metrics is None:
            return
        failed = {
            "compression": int(state.compression.state is JobState.FAILED),
            "profiling": sum(job.state is JobState.FAILED for job in state.profiling.values()),
        }
        self.metrics.assessed(md.owner.namespace, md.owner.name, assessment.phase, failed)
        if decision.selection is None:
            return
        self.metrics.observe(md, decision.selection, decision.status)

    def _has_pod_monitors(self) -> bool:
        """Whether the Prometheus Operator's CRDs exist (checked once per operator run)."""
        if self._pod_monitors is None:
            self._pod_monitors = self.cluster.has_api("monitoring.coreos.com/v1", "podmonitors")
        return self._pod_monitors

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def _write_status(
        self, body: Mapping[str, Any], assessment: Assessment, fields: Mapping[str, Any], emit: Emit
    ) -> None:
        old = ModelDeploymentStatus.from_body(body)
        generation = int(body["metadata"].get("generation") or 1)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        changed = status_writes.reconciler_patch(old, assessment, fields, generation, now)
        if changed is None:
            return
        owner = owner_of(body)
        self.cluster.patch_status(API_VERSION, "ModelDeployment", owner.namespace, owner.name, changed)
        _emit_transitions(old, assessment, emit)


def resync_due(
    passes: Sequence[tuple[tuple[str, str], tuple[float, bool]]], now: float, drift_seconds: float
) -> list[tuple[str, str]]:
    """Of `passes` ((namespace, name), (when, settled)), those a periodic pass at `now` reconciles."""
    return [key for key, (when, settled) in passes if not settled or now - when >= drift_seconds]


def _in_the_way_message(md: ModelDeploymentSpec, objects: Sequence[tuple[str, str]]) -> str:
    named = ", ".join(f"{kind} {name}" for kind, name in objects)
    return (
        f"{named} already exist(s) in namespace {md.owner.namespace} and is not owned by ModelDeployment "
        f"{md.owner.name}: left alone; delete it, or rename this ModelDeployment"
    )


def _emit_transitions(old: ModelDeploymentStatus, assessment: Assessment, emit: Emit) -> None:
    for condition in assessment.conditions:
        previous = old.condition(condition.type)
        status = as_status(condition)
        if previous is None or previous.reason != condition.reason or previous.status != status:
            kind = (
                "Warning"
                if condition.reason in WARNING_REASONS and condition.status is not True
                else "Normal"
            )
            if condition.type == "Degraded":
                kind = "Warning" if condition.status else "Normal"
            emit(kind, condition.reason, f"{condition.type}={status}: {condition.message}")
    if old.phase != assessment.phase.value:
        emit("Normal", f"Phase{assessment.phase.value}", f"phase {old.phase or 'None'} -> {assessment.phase.value}")
