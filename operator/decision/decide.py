"""The pure reconcile decision: ModelDeployment + HardwareProfiles + observed state → desired objects,
the plan and the status.

Nothing here talks to the cluster or the disk: the reconciler gathers :class:`ClusterState` and the
artifacts, calls :func:`decide`, then applies what it says. Jobs are only created when absent (their
pod templates are immutable); serving objects are applied on every pass, which corrects drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import artifact_files, planner
from frugal.operator.decision.conditions import ABSENT_JOB, Assessment, Job, JobState, Observed, conditions
from frugal.operator.decision.planner import Option
from frugal.operator.decision.pod_problems import PodProblem
from frugal.operator.decision.revisions import Rollover, pipeline_hash, with_revision
from frugal.operator.manifests import images, jobs, names, network_policies, serving_objects
from frugal.operator.manifests.serving_objects import Live
from frugal.operator.manifests.storage import ArtifactLocation, OwnDirectory, locate, own_directory


@dataclass(frozen=True)
class Settings:
    """The operator's own configuration (command-line flags)."""

    # The full image (compression); the serving and gpu images default to its siblings
    # (manifests.images): "" means derived.
    image: str = images.DEFAULT_FULL
    serving_image: str = ""
    gpu_image: str = ""
    storage_uri: str = "pvc://frugal-artifacts"
    pvc_root: Path | None = None
    # file:// URIs: a directory of the node (hostPath) or of the pod's image. For `frugal up` and a
    # single-node development cluster only; off, the operator refuses them with a condition.
    allow_host_path: bool = False
    # NetworkPolicies for every ModelDeployment's pods (manifests.network_policies), admitting
    # Prometheus from `monitoring_namespace`.
    network_policies: bool = False
    monitoring_namespace: str = "monitoring"
    # nodeSelector and tolerations of the always-on fronts: the operator's own (the chart passes them).
    front_placement: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serving_default(self) -> str:
        return self.serving_image or images.sibling(self.image, "serving")

    @property
    def gpu_default(self) -> str:
        return self.gpu_image or images.sibling(self.image, "gpu")

    def compression_image(self, profile: HardwareProfileSpec) -> str:
        return images.compression(self.image, self.gpu_default, profile)

    def serving_image_for(self, profile: HardwareProfileSpec) -> str:
        return images.serving(self.serving_default, self.gpu_default, profile)


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


def artifacts_to_remove(md: ModelDeploymentSpec, settings: Settings) -> OwnDirectory | None:
    """When a ModelDeployment is deleted: the directory of all its generations' artifacts, as the
    operator sees it, unless spec.storage.retainArtifacts keeps them (or the operator cannot see it).
    Raises :class:`~frugal.operator.manifests.storage.NotConfined` when that directory is not the
    ModelDeployment's own (a sub-path that could meet another's): nothing is to be deleted then."""
    if md.retain_artifacts or host_path_refusal(md, settings):
        return None  # a refused ModelDeployment never wrote artifacts: nothing of the node's to remove
    storage_uri = md.storage_uri or settings.storage_uri
    return own_directory(storage_uri, settings.storage_uri, md.owner, settings.pvc_root)


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
    gen = md.owner.generation
    previous = cluster.live_generation if cluster.live_generation not in (None, gen) else None
    missing = tuple(p for p in needed_profiles(md) if p not in profiles)
    if missing:
        observed = Observed(gen, missing_profiles=missing, previous_generation_live=previous)
        return Decision((), None, conditions(observed), {}, observed=observed)
    refused = host_path_refusal(md, settings)
    if refused:
        observed = Observed(gen, host_path_error=refused, previous_generation_live=previous)
        return Decision((), None, conditions(observed), {}, observed=observed)
    location = locate(md.storage_uri or settings.storage_uri, md.owner, settings.pvc_root)
    to_apply: list[dict[str, Any]] = []
    if settings.network_policies:  # before any pod: the Jobs' pods are confined from their start
        to_apply += network_policies.desired_network_policies(md, settings.monitoring_namespace)
    compression = cluster.compression
    if compression.state is JobState.ABSENT:
        to_apply += _compression_objects(md, profiles, location, settings)
        compression = Job(JobState.RUNNING, name=to_apply[-1]["metadata"]["name"])
    observed = Observed(
        gen, compression=compression, previous_generation_live=previous, pod_problem=cluster.pod_problem
    )
    if cluster.compression.state is not JobState.SUCCEEDED:
        return _decision(to_apply, location, observed, {})
    if isinstance(found, artifact_files.ArtifactError) or found is None:
        error = str(found) if found is not None else _unreadable(location)
        return _decision(to_apply, location, _with(observed, artifacts_error=error), {})
    for name in md.serving_profiles:
        if cluster.profiling.get(name, Job(JobState.ABSENT)).state is JobState.ABSENT:
            to_apply.append(jobs.desired_profiling_job(md, profiles[name], settings.serving_image_for(profiles[name]), location))
    profiling = {p: cluster.profiling.get(p, Job(JobState.ABSENT)) for p in md.serving_profiles}
    observed = _with(observed, profiling=profiling)
    status: dict[str, Any] = {
        "artifacts": {"uri": location.uri, "generation": gen, "pipelineHash": pipeline_hash(md)}
    }
    if any(j.state in (JobState.ABSENT, JobState.RUNNING) for j in profiling.values()):
        return _decision(to_apply, location, observed, status)
    return _plan_and_serve(
        md, profiles, cluster, found, settings, location, to_apply, observed, status, rollover
    )


def _plan_and_serve(
    md: ModelDeploymentSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    cluster: ClusterState,
    found: artifact_files.Artifacts,
    settings: Settings,
    location: ArtifactLocation,
    to_apply: list[dict[str, Any]],
    observed: Observed,
    status: dict[str, Any],
    rollover: Rollover | None,
) -> Decision:
    try:
        variants = artifact_files.planner_variants(found)
        plan = planner.plan(
            variants, [planner_profile(profiles[p]) for p in md.serving_profiles], objectives(md)
        )
    except (artifact_files.ArtifactError, planner.PlanningError) as error:
        return _decision(to_apply, location, _with(observed, plan_error=str(error)), status)
    status["variants"] = variant_table(found, plan, md)
    observed = _with(observed, used_fallback=plan.used_fallback)
    if plan.chosen is None:
        return _decision(to_apply, location, _with(observed, plan_error=plan.reason), status, plan)
    chosen, reason, initial = plan.chosen, plan.reason, md.initial_replicas
    replanned = None if rollover is None else plan.option(*_option(rollover.selection))
    if rollover is not None and replanned is not None and replanned.feasible:
        chosen, initial = replanned, max(1, min(rollover.replicas, md.spec.autoscaling.max_replicas))
        reason = f"re-planned at the observed load (status.replan); at deploy time: {plan.reason}"
    selection = Option(chosen.variant, chosen.profile, chosen.shards)
    profile = profiles[chosen.profile]
    replicas = {i: cluster.shard_replicas.get(i, initial) for i in range(selection.shards)}
    for index in range(selection.shards):
        to_apply += serving_objects.desired_shard(
            md, profile, settings.serving_image_for(profile), location, selection, index
        )
    scale = tuple(
        serving_objects.desired_replicas(md.owner, index, replicas[index])
        for index in range(selection.shards)
        if index not in cluster.shard_replicas
    )
    ready = tuple(cluster.shard_ready.get(i, 0) for i in range(selection.shards))
    live = all(r >= 1 for r in ready)
    current = Live.of(md.owner)
    before = None if cluster.live_generation is None else Live(cluster.live_generation, cluster.live_revision)
    live_now = current if live or before is None else None
    delete: tuple[tuple[str, str, str], ...] = ()
    if serving_objects.has_front(md):
        # The front's upstream moves like the endpoint did; the endpoint itself always selects the front.
        if live_now is not None:
            to_apply.append(serving_objects.desired_live_service(md, live_now))
        to_apply.append(serving_objects.desired_front(md, settings.serving_default, settings.front_placement))
        to_apply.append(serving_objects.desired_endpoint_service(md, before or current))
    else:
        if live_now is not None:
            to_apply.append(serving_objects.desired_endpoint_service(md, live_now))
        if cluster.front_exists:
            delete = (
                ("apps/v1", "Deployment", names.front(md.owner)),
                ("v1", "Service", names.live_service(md.owner)),
            )
    if cluster.pod_monitors:
        to_apply.append(serving_objects.desired_pod_monitor(md))
    rolling_over_from = None
    if before is not None and before.generation == current.generation and before != current:
        previous = rollover.previous if rollover is not None else None
        rolling_over_from = f"revision {before.revision}" + (
            f" ({previous.variant} on {previous.profile})" if previous is not None else ""
        )
    observed = _with(
        observed,
        planned=f"{chosen.variant} on {chosen.profile}",
        shards_desired=tuple(replicas.values()),
        shards_ready=ready,
        rolling_over_from=rolling_over_from,
    )
    status.update(_serving_status(md, chosen, reason, replicas, ready))
    return Decision(
        tuple(to_apply),
        location,
        conditions(observed),
        status,
        plan,
        selection,
        live,
        observed,
        scale,
        delete,
    )


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
        shard_counts=(md.shards,),
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


def _compression_objects(
    md: ModelDeploymentSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    location: ArtifactLocation,
    settings: Settings,
) -> list[dict[str, Any]]:
    profile = profiles[md.compression_profile]
    job = jobs.desired_compression_job(md, profile, settings.compression_image(profile), location)
    service = jobs.desired_distillation_service(md)
    return [job] if service is None else [service, job]


def _unreadable(location: ArtifactLocation) -> str:
    return (
        f"the operator cannot read {location.uri}: run it with --pvc-root (FRUGAL_PVC_ROOT) where the "
        "claim is mounted (the Helm chart mounts artifacts.claimName), or use file:// or pvc:// storage "
        "in spec.storage.uri"
    )


def _with(observed: Observed, **changes: Any) -> Observed:
    return replace(observed, **changes)


def _decision(
    to_apply: list[dict[str, Any]],
    location: ArtifactLocation | None,
    observed: Observed,
    status: dict[str, Any],
    plan: planner.Plan | None = None,
) -> Decision:
    return Decision(tuple(to_apply), location, conditions(observed), status, plan, observed=observed)
