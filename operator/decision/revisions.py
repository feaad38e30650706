"""Which generation and serving revision a ModelDeployment's children carry (pure).

A **generation** is what ``metadata.generation`` counts, except that an edit of ``spec.autoscaling``
alone keeps the generation whose artifacts were built from the same pipeline
(:func:`with_effective_generation`): nothing is compressed, profiled or rolled out again. A
**revision** counts re-planning rollovers within a generation (:func:`rollover_from_status`, from
``status.replan``, which the autoscaler's tick writes): the shards of revision N carry it in their
names and labels, so the new option starts beside the running one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from frugal.operator.api.models import ModelDeploymentStatus, StatusLike
from frugal.operator.api.models import Option as StatusOption
from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.decision.planner import Option


@dataclass(frozen=True)
class Rollover:
    """A re-planning rollover within the generation (status.replan, which the autoscaler writes): the
    option to serve instead of the deploy-time plan's, under a new serving revision."""

    revision: int
    selection: Option
    # Replicas per shard the new revision starts with: what the observed load needs of it.
    replicas: int
    previous: Option | None = None


def rollover_from_status(md: ModelDeploymentSpec, status: StatusLike) -> Rollover | None:
    """status.replan, when it belongs to `md`'s (effective) generation."""
    replan = ModelDeploymentStatus.from_status(status).replan
    if replan is None or replan.generation != md.owner.generation or (replan.revision or 0) < 1:
        return None
    selected = _selection(replan.selected)
    if selected is None or replan.revision is None:
        return None
    return Rollover(replan.revision, selected, replan.replicas or md.initial_replicas, _selection(replan.from_))


def _selection(option: StatusOption | None) -> Option | None:
    if option is None or not option.variant or not option.hardware_profile:
        return None
    return Option(option.variant, option.hardware_profile, option.shards or 1)


def with_revision(md: ModelDeploymentSpec, rollover: Rollover | None) -> ModelDeploymentSpec:
    """`md` with the serving revision its shards carry (0 until a rollover)."""
    revision = 0 if rollover is None else rollover.revision
    if md.owner.revision == revision:
        return md
    return replace(md, owner=replace(md.owner, revision=revision))


def pipeline_hash(md: ModelDeploymentSpec) -> str:
    """Digest of everything in the spec that shapes artifacts or serving Deployments: all but
    spec.autoscaling, which only the autoscaler reads."""
    spec = md.spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"autoscaling"})
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def with_effective_generation(
    md: ModelDeploymentSpec, status: StatusLike
) -> ModelDeploymentSpec:
    """`md` with the generation its children carry: an edit that changed only spec.autoscaling keeps
    the generation whose artifacts (status.artifacts) were built from the same pipeline, so it does
    not compress, profile or roll out again."""
    artifacts = ModelDeploymentStatus.from_status(status).artifacts
    built_for = None if artifacts is None else artifacts.generation
    if (
        artifacts is not None
        and built_for is not None
        and 0 < built_for < md.owner.generation
        and artifacts.pipeline_hash == pipeline_hash(md)
    ):
        return replace(md, owner=replace(md.owner, generation=built_for))
    return md


def as_served(md: ModelDeploymentSpec, status: StatusLike) -> tuple[ModelDeploymentSpec, Rollover | None]:
    """`md` as its children are labelled now (effective generation, then revision) and the rollover."""
    md = with_effective_generation(md, status)
    rollover = rollover_from_status(md, status)
    return with_revision(md, rollover), rollover


# status.replan.reason of a rollover that replaces objects the API server will not update in place.
REPLACE_REASON = "Replace"


def refused_in_place(kind: str, message: str) -> bool:
    """Whether an API server's refusal (422) says a field of an existing `kind` cannot change in
    place: a Deployment's spec.selector, a Job's spec.template (what an older operator wrote)."""
    return kind in ("Deployment", "Job") and "field is immutable" in message


def replacement_status(
    md: ModelDeploymentSpec,
    status: StatusLike,
    running: Option,
    replicas: int,
    refused: str,
    timestamp: str,
) -> dict[str, Any]:
    """status.replan that serves `running` again under the next revision: new Deployments with new
    names start beside the ones the API server refused to update in place (`refused`), and, as with
    any rollover, the endpoint moves only once they are ready and the old ones go after it."""
    previous = ModelDeploymentStatus.from_status(status).replan
    same_generation = previous is not None and previous.generation == md.owner.generation
    last = (previous.revision or 0) if previous is not None and same_generation else 0
    revision = max(last, md.owner.revision) + 1
    option = StatusOption(
        variant=running.variant, hardware_profile=running.profile, shards=running.shards
    ).to_patch()
    message = (
        f"{REPLACE_REASON}: {refused} cannot be updated in place (an immutable field differs, e.g. it was "
        f"written by an earlier operator version); revision {revision} replaces it with the same option "
        f"({running}), started beside it: the endpoint moves once it is ready, then the old one is deleted"
    )
    return {
        "generation": md.owner.generation,
        "revision": revision,
        "selected": option,
        "from": option,
        "replicas": max(1, replicas),
        "loadRps": None,
        "costPer1kRequests": None,
        "fromCostPer1kRequests": None,
        "reason": REPLACE_REASON,
        "message": message[:4096],
        "lastRolloverTime": timestamp,
    }
