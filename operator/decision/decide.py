"""The pure reconcile decision: ModelDeployment + HardwareProfiles + observed state → desired objects,
the plan and the status.

Nothing here talks to the cluster or the disk: the reconciler gathers :class:`ClusterState` and the
artifacts, calls :func:`decide`, then applies what it says. Jobs are only created when absent (their
pod templates are immutable); serving objects are applied on every pass, which corrects drift.

:func:`decide` runs its phases in order (compress → profile → plan → serve) over one frozen
:class:`_Context`; each either adds to it or ends the pass with the :class:`Decision`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import artifact_files, planner
from frugal.operator.decision.conditions import ABSENT_JOB, Assessment, Job, JobState, Observed, conditions
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.decision.planner import Option
from frugal.operator.decision.pod_problems import PodProblem
from frugal.operator.decision.revisions import Rollover, pipeline_hash, with_revision
from frugal.operator.manifests import jobs, names, network_policies, node_cache_volumes, serving_objects
from frugal.operator.manifests.serving_objects import Live
from frugal.operator.manifests.storage import (
    ArtifactLocation,
    OwnDirectory,
    OwnPrefix,
    locate,
    own_directory,
    store_access,
)


@dataclass(frozen=True)
class ClusterState:
    """What the reconciler found for the current generation."""

    compression: Job = ABSENT_JOB
    profiling: Mapping[str, Job] = field(default_factory=dict)
    shard_replicas: Mapping[int, int] = field(default_factory=dict)
    shard_ready: Mapping[int, int] = field(default_factory=dict)
    live_generation: int | None = None
    # The serving revision of live_generation the endpoint reaches.
    live_revision: int = 0
    # The cluster serves the Prometheus Operator's PodMonitor kind, so serving pods can be scraped.
    pod_monitors: bool = False
    # The ModelDeployment's front Deployment exists (it had minReplicas 0 at some point).
    front_exists: bool = False
    # The first pod of this generation that cannot run, and why (None: every pod runs or waits its turn).
    pod_problem: PodProblem | None = None


@dataclass(frozen=True)
class Decision:
    apply: tuple[dict[str, Any], ...]
    location: ArtifactLocation | None
    assessment: Assessment
    status: dict[str, Any]
    plan: planner.Plan | None = None
    selection: Option | None = None
    # The current (generation, revision) is live: older generations and other revisions may go.
    prune_superseded: bool = False
    observed: Observed | None = None
    # Replica counts of newly created shards, applied under the autoscaler's field manager.
    scale: tuple[dict[str, Any], ...] = ()
    # (apiVersion, kind, name) of children that should no longer exist, in the ModelDeployment's namespace.
    delete: tuple[tuple[str, str, str], ...] = ()


# Measured throughput varies about this much between runs; cheaper by less than that is not cheaper.
COST_TOLERANCE = 0.10


def needed_profiles(md: ModelDeploymentSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys((md.compression_profile, *md.serving_profiles)))


def artifacts_to_remove(md: ModelDeploymentSpec, settings: Settings) -> OwnDirectory | OwnPrefix | None:
    """When a ModelDeployment is deleted: the directory of all its generations' artifacts, as the
    operator sees it, unless spec.storage.retainArtifacts keeps them (or the operator cannot see it).
    Raises :class:`~frugal.operator.manifests.storage.NotConfined` when that directory is not the
    ModelDeployment's own (a sub-path that could meet another's): nothing is to be deleted then."""
    if md.retain_artifacts or host_path_refusal(md, settings):
        return None  # a refused ModelDeployment never wrote artifacts: nothing of the node's to remove
    storage_uri = md.storage_uri or settings.storage_uri
    return own_directory(storage_uri, settings.storage_uri, md.owner, settings.pvc_root)


def artifact_location(md: ModelDeploymentSpec, settings: Settings) -> ArtifactLocation:
    """Where `md`'s current generation keeps its artifacts, and how its pods reach its object store."""
    storage_uri = md.storage_uri or settings.storage_uri
    access = store_access(md.spec.object_store, settings.object_store, [*md.uris.values(), storage_uri])
    return locate(storage_uri, md.owner, settings.pvc_root, access)


def host_path_refusal(md: ModelDeploymentSpec, settings: Settings) -> str | None:
    """Why `md` may not run here, when a URI it uses is file:// and hostPath is not allowed: in a
    pod, file:// is a directory of the node (storage, mounted writable) or of the image (inputs), so
    anyone who may create a ModelDeployment could mount any node path."""
    if settings.allow_host_path:
        return None
    uris = {**md.uris}
    if "spec.storage.uri" not in uris:
        uris["the operator's --storage-uri (no spec.storage.uri)"] = settings.storage_uri
    return file_uri_refusal(uris, "frugal up")


def file_uri_refusal(uris: Mapping[str, str], local_command: str) -> str | None:
    """The refusal of the first file:// URI among `uris` (field -> URI) by an operator that does not
    allow hostPath; `local_command` is where file:// belongs instead."""
    for where, uri in uris.items():
        if uri.startswith("file:"):
            return (
                f"{where}: {uri!r} is a path on the node or in the image (file://), which this operator "
                f"does not allow: use pvc://<claim>/<path>; file:// is for {local_command}, or an operator "
                "started with --allow-host-path on a single-node development cluster"
            )
    return None


@dataclass(frozen=True)
class _Choice:
    """What the plan phase chose to serve, and why."""

    candidate: planner.Candidate
    reason: str
    initial_replicas: int  # of each shard that does not exist yet


@dataclass(frozen=True)
class _Context:
    """One pass of :func:`decide`: its inputs, and what the phases so far have added."""

    md: ModelDeploymentSpec
    profiles: Mapping[str, HardwareProfileSpec]
    cluster: ClusterState
    found: artifact_files.Artifacts | artifact_files.ArtifactError | None
    settings: Settings
    rollover: Rollover | None
    location: ArtifactLocation
    observed: Observed
    apply: tuple[dict[str, Any], ...] = ()
    status: Mapping[str, Any] = field(default_factory=dict)
    plan: planner.Plan | None = None
    choice: _Choice | None = None


def decide(
    md: ModelDeploymentSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    cluster: ClusterState,
    found: artifact_files.Artifacts | artifact_files.ArtifactError | None,
    settings: Settings,
    rollover: Rollover | None = None,
) -> Decision:
    """`rollover`: serve its option under its revision instead of the plan's choice (when the plan
    still finds that option feasible)."""
    md = with_revision(md, rollover)
    refused = _refusal(md, profiles, cluster, settings)
    if refused is not None:
        return refused
    context = _Context(
        md,
        profiles,
        cluster,
        found,
        settings,
        rollover,
        location=artifact_location(md, settings),
        observed=Observed(
            md.owner.generation,
            previous_generation_live=_previous_generation(md, cluster),
            pod_problem=cluster.pod_problem,
        ),
    )
    for phase in (_compress, _profile, _plan):
        outcome = phase(context)
        if isinstance(outcome, Decision):
            return outcome
        context = outcome
    return _serve(context)


def _refusal(
    md: ModelDeploymentSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    cluster: ClusterState,
    settings: Settings,
) -> Decision | None:
    """The decision for a ModelDeployment that cannot start here (a HardwareProfile it names is
    missing, or it uses file:// where hostPath is not allowed), or None."""
    previous = _previous_generation(md, cluster)
    missing = tuple(p for p in needed_profiles(md) if p not in profiles)
    if missing:
        observed = Observed(md.owner.generation, missing_profiles=missing, previous_generation_live=previous)
    elif refused := host_path_refusal(md, settings):
        observed = Observed(md.owner.generation, host_path_error=refused, previous_generation_live=previous)
    else:
        return None
    return Decision((), None, conditions(observed), {}, observed=observed)


def _compress(context: _Context) -> _Context | Decision:
    """The NetworkPolicies and the compression Job; the pass goes on once the Job succeeded and its
    artifacts could be read."""
    md, settings, cluster = context.md, context.settings, context.cluster
    objects: list[dict[str, Any]] = []
    if settings.network_policies:  # before any pod: the Jobs' pods are confined from their start
        objects += network_policies.desired_network_policies(md, settings.monitoring_namespace)
    compression = cluster.compression
    if compression.state is JobState.ABSENT:
        objects += _compression_objects(context)
        compression = Job(JobState.RUNNING, name=objects[-1]["metadata"]["name"])
    context = _adding(context, objects, compression=compression)
    if cluster.compression.state is not JobState.SUCCEEDED:
        return _decision(context)
    if not isinstance(context.found, artifact_files.Artifacts):
        error = str(context.found) if context.found is not None else _unreadable(context.location)
        return _decision(context, artifacts_error=error)
    return context


def _profile(context: _Context) -> _Context | Decision:
    """A profiling Job per serving profile; the pass goes on once every one has finished."""
    md, profiles = context.md, context.profiles
    profiling = {p: context.cluster.profiling.get(p, ABSENT_JOB) for p in md.serving_profiles}
    objects = [
        jobs.desired_profiling_job(
            md, profiles[name], context.settings.serving_image_for(profiles[name]), context.location
        )
        for name in md.serving_profiles
        if profiling[name].state is JobState.ABSENT
    ]
    artifacts = {
        "uri": context.location.uri,
        "generation": md.owner.generation,
        "pipelineHash": pipeline_hash(md),
    }
    context = replace(
        _adding(context, objects, profiling=profiling), status={**context.status, "artifacts": artifacts}
    )
    if any(j.state in (JobState.ABSENT, JobState.RUNNING) for j in profiling.values()):
        return _decision(context)
    return context


def _plan(context: _Context) -> _Context | Decision:
    """The plan over the profiled variants and the option to serve: the plan's choice, or the
    rollover's while the plan still finds it feasible."""
    md, found, rollover = context.md, context.found, context.rollover
    assert isinstance(found, artifact_files.Artifacts)  # _compress goes no further without them
    try:
        variants = artifact_files.planner_variants(found)
        plan = planner.plan(
            variants, [planner_profile(context.profiles[p]) for p in md.serving_profiles], objectives(md)
        )
    except (artifact_files.ArtifactError, planner.PlanningError) as error:
        return _decision(context, plan_error=str(error))
    context = replace(
        context,
        observed=replace(context.observed, used_fallback=plan.used_fallback),
        plan=plan,
        status={**context.status, "variants": variant_table(found, plan, md)},
    )
    if plan.chosen is None:
        return _decision(context, plan_error=plan.reason)
    choice = _Choice(plan.chosen, plan.reason, md.initial_replicas)
    replanned = None if rollover is None else plan.option(*_option(rollover.selection))
    if rollover is not None and replanned is not None and replanned.feasible:
        choice = _Choice(
            replanned,
            f"re-planned at the observed load (status.replan); at deploy time: {plan.reason}",
            max(1, min(rollover.replicas, md.spec.autoscaling.max_replicas)),
        )
    return replace(context, choice=choice)


def _serve(context: _Context) -> Decision:
    """The chosen option's shards, the objects in front of them, and the status of what serves."""
    md, cluster, choice = context.md, context.cluster, context.choice
    assert choice is not None  # _plan goes no further without one
    chosen = choice.candidate
    selection = Option(chosen.variant, chosen.profile, chosen.shards)
    profile = context.profiles[chosen.profile]
    shards = range(selection.shards)
    replicas = {i: cluster.shard_replicas.get(i, choice.initial_replicas) for i in shards}
    ready = tuple(cluster.shard_ready.get(i, 0) for i in shards)
    live = all(r >= 1 for r in ready)
    image = context.settings.serving_image_for(profile)
    cache_root = context.settings.node_cache_root
    shard_objects = [
        *(node_cache_volumes.desired(md.owner.namespace, cache_root) if cache_root else []),
        *(
            piece
            for index in shards
            for piece in serving_objects.desired_shard(
                md, profile, image, context.location, selection, index, node_cache=bool(cache_root)
            )
        ),
    ]
    scale = tuple(
        serving_objects.desired_replicas(md.owner, index, replicas[index])
        for index in shards
        if index not in cluster.shard_replicas
    )
    fronting, delete = _endpoint_objects(context, live)
    monitor = [serving_objects.desired_pod_monitor(md)] if cluster.pod_monitors else []
    context = _adding(
        context,
        (*shard_objects, *fronting, *monitor),
        planned=f"{chosen.variant} on {chosen.profile}",
        shards_desired=tuple(replicas.values()),
        shards_ready=ready,
        rolling_over_from=_rolling_over_from(context),
    )
    status = {**context.status, **_serving_status(md, chosen, choice.reason, replicas, ready)}
    return Decision(
        context.apply,
        context.location,
        conditions(context.observed),
        status,
        context.plan,
        selection,
        live,
        context.observed,
        scale,
        delete,
    )


def _endpoint_objects(
    context: _Context, live: bool
) -> tuple[list[dict[str, Any]], tuple[tuple[str, str, str], ...]]:
    """The endpoint Service (and with scale to zero, the front and its upstream Service) to apply,
    and the front's objects to delete once the model no longer scales to zero. The endpoint moves to
    the current revision once every shard has a ready replica, or at once when nothing served before."""
    md = context.md
    current = Live.of(md.owner)
    before = _live_before(context.cluster)
    live_now = current if live or before is None else None
    if serving_objects.has_front(md):
        assert isinstance(context.found, artifact_files.Artifacts) and context.choice is not None
        # The front's upstream, and what the front may wake, move like the endpoint did (and are kept
        # up to date for a live revision asleep at zero); the endpoint itself always selects the front.
        target = live_now if live_now is not None or before != current else current
        shards = context.choice.candidate.shards
        upstream = (
            []
            if target is None
            else [
                *serving_objects.desired_front_access(md, target, shards),
                serving_objects.desired_live_service(md, target, shards),
            ]
        )
        served = context.found.manifest.variant(context.choice.candidate.variant)
        front = serving_objects.desired_front(
            md, context.settings.serving_default, context.settings.front_placement, inputs=served.inputs
        )
        fronted = serving_objects.desired_endpoint_service(md, before or current)
        return [serving_objects.desired_front_account(md), *upstream, front, fronted], ()
    endpoint = [] if live_now is None else [serving_objects.desired_endpoint_service(md, live_now)]
    if not context.cluster.front_exists:
        return endpoint, ()
    identity = names.front_identity(md.owner)
    return endpoint, (
        ("apps/v1", "Deployment", names.front(md.owner)),
        ("v1", "Service", names.live_service(md.owner)),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", identity),
        ("rbac.authorization.k8s.io/v1", "Role", identity),
        ("v1", "ServiceAccount", identity),
    )


def _rolling_over_from(context: _Context) -> str | None:
    """What still serves while a re-planning rollover's new revision starts (None: no rollover)."""
    current = Live.of(context.md.owner)
    before = _live_before(context.cluster)
    if before is None or before.generation != current.generation or before == current:
        return None
    previous = context.rollover.previous if context.rollover is not None else None
    return f"revision {before.revision}" + (
        f" ({previous.variant} on {previous.profile})" if previous is not None else ""
    )


def _live_before(cluster: ClusterState) -> Live | None:
    """What the endpoint reached before this pass (None: nothing served yet)."""
    return None if cluster.live_generation is None else Live(cluster.live_generation, cluster.live_revision)


def _previous_generation(md: ModelDeploymentSpec, cluster: ClusterState) -> int | None:
    """The older generation that still serves while this one starts."""
    live = cluster.live_generation
    return live if live not in (None, md.owner.generation) else None


def _option(selection: Option) -> tuple[str, str, int]:
    return (selection.variant, selection.profile, selection.shards)


def planner_profile(profile: HardwareProfileSpec) -> planner.Profile:
    """What the planner needs of a HardwareProfile."""
    memory = None if profile.memory_gib is None else int(profile.memory_gib * 2**30)
    return planner.Profile(
        profile.name, float(profile.cost_per_hour), profile.idle_watts, profile.max_watts, memory
    )


def objectives(md: ModelDeploymentSpec) -> planner.Objectives:
    return planner.Objectives(
        slo_p95_ms=md.slo_p95_ms,
        max_accuracy_drop=md.max_drop,
        price_per_kwh=float(md.price_per_kwh),
        shard_counts=md.shard_counts,
        cost_tolerance=COST_TOLERANCE,
    )


def variant_table(
    found: artifact_files.Artifacts, plan: planner.Plan, md: ModelDeploymentSpec
) -> list[dict[str, Any]]:
    """status.variants: each variant with its metric, whether it is within budget, and its rows."""
    steps = artifact_files.variant_steps(found)
    by_name = {v.name: v for v in found.manifest.variants}
    table = []
    for name, entry in by_name.items():
        rows = [r for r in plan.table if r.variant == name]
        accepted = any(r.feasible for r in rows)
        reason = "; ".join(f"{r.profile}: {r.reason}" for r in rows)
        table.append(
            {
                "name": name,
                "steps": steps.get(name, []),
                "sizeBytes": entry.size_bytes,
                "metric": entry.metric.model_dump(by_alias=True) if entry.metric else {},
                "accepted": accepted,
                "reason": reason[:1024],
                "profiles": [_profile_row(r, md, plan) for r in rows],
            }
        )
    return table


def _profile_row(row: planner.Candidate, md: ModelDeploymentSpec, plan: planner.Plan) -> dict[str, Any]:
    """One row of the plan table (what `frugal up` prints and `kubectl describe md` shows)."""
    result: dict[str, Any] = {
        "hardwareProfile": row.profile,
        "shards": row.shards,
        "verdict": planner.why_not(row, plan)[:512],
    }
    if row.latency_p95_ms is not None:
        result["latencyP95Ms"] = round(row.latency_p95_ms, 4)
        result["meetsSlo"] = row.latency_p95_ms <= md.slo_p95_ms
    if row.throughput_rps is not None:
        result["throughputRps"] = round(row.throughput_rps, 3)
    if row.cost_per_1k_requests is not None:
        result["costPer1kRequests"] = f"{row.cost_per_1k_requests:.6g}"
        result["replicas"] = row.replicas
    if row.energy_per_request_joules is not None:
        result["joulesPerRequest"] = round(row.energy_per_request_joules, 6)
    if row.measured_by:
        result["measuredBy"] = row.measured_by
    if row.memory_bytes is not None:
        result["memoryBytes"] = row.memory_bytes
    return result


def _serving_status(
    md: ModelDeploymentSpec,
    chosen: planner.Candidate,
    reason: str,
    replicas: Mapping[int, int],
    ready: tuple[int, ...],
) -> dict[str, Any]:
    pods = sum(replicas.values())
    return {
        "selected": {
            "variant": chosen.variant,
            "hardwareProfile": chosen.profile,
            "shards": chosen.shards,
            "reason": reason[:4096],
        },
        "shards": [{"index": i, "replicas": replicas[i], "readyReplicas": ready[i]} for i in replicas],
        "replicas": pods,
        "readyReplicas": sum(ready),
        "endpoint": serving_objects.endpoint_url(md.owner),
        "grpcEndpoint": serving_objects.grpc_endpoint(md),
    }


def _compression_objects(context: _Context) -> list[dict[str, Any]]:
    md = context.md
    profile = context.profiles[md.compression_profile]
    job = jobs.desired_compression_job(
        md, profile, context.settings.compression_image(profile), context.location
    )
    service = jobs.desired_distillation_service(md)
    return [job] if service is None else [service, job]


def _unreadable(location: ArtifactLocation) -> str:
    return (
        f"the operator cannot read {location.uri}: run it with --pvc-root (FRUGAL_PVC_ROOT) where the "
        "claim is mounted (the Helm chart mounts artifacts.claimName), or use file:// or pvc:// storage "
        "in spec.storage.uri"
    )


def _adding(context: _Context, objects: Iterable[dict[str, Any]], **observed: Any) -> _Context:
    """`context` with `objects` to apply after its own, and these changes to what it observed."""
    return replace(context, apply=(*context.apply, *objects), observed=replace(context.observed, **observed))


def _decision(context: _Context, **observed: Any) -> Decision:
    """The decision of a pass that goes no further than `context`, with these changes to what it observed."""
    seen = replace(context.observed, **observed)
    return Decision(
        context.apply, context.location, conditions(seen), dict(context.status), context.plan, observed=seen
    )
