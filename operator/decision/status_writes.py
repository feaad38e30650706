"""The status each control loop writes, built in one place from what the loop decided (pure).

Each writer owns some of the status: the reconciler its phase, message, conditions and the decision's
fields (keeping the autoscaler's conditions as that wrote them), the autoscaler its observed numbers
and conditions, the batch reconciler a BatchInference's whole status. Every function here reads the
previous status typed and returns the patch to send (a JSON merge patch, ``None`` removing a field),
or ``None`` when nothing changed. What is written goes through the status model strictly: a field
the CRD does not have, or of the wrong type, is a bug here and raises (the tests write every status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from frugal.operator.api.models import BatchInferenceStatus, ModelDeploymentStatus
from frugal.operator.api.models import Condition as StatusCondition
from frugal.operator.decision.conditions import Assessment, Condition, merge

# Condition types the autoscaler writes: the reconciler keeps them as they are.
AUTOSCALER_CONDITIONS = frozenset({"MetricsAvailable", "PowerCapped", "Replanned"})


def reconciler_patch(
    old: ModelDeploymentStatus,
    assessment: Assessment,
    fields: Mapping[str, Any],
    generation: int,
    now: str,
) -> dict[str, Any] | None:
    """The reconciler's write: phase, message, its conditions and the decision's `fields`; only the
    keys that changed (None: nothing did)."""
    produced = {c.type for c in assessment.conditions}
    kept = [c for c in old.conditions if c.type not in produced and c.type in AUTOSCALER_CONDITIONS]
    conditions = merge(old.conditions, assessment.conditions, generation, now) + kept
    new = ModelDeploymentStatus.model_validate(
        {
            "phase": assessment.phase.value,
            "observedGeneration": generation,
            "message": assessment.message,
            "conditions": [c.to_patch() for c in conditions],
            **fields,
        }
    ).to_patch()
    before = old.to_patch()
    changed = {k: v for k, v in new.items() if _comparable(before.get(k), k) != _comparable(v, k)}
    return changed or None


def autoscaler_patch(
    old: ModelDeploymentStatus,
    fields: Mapping[str, Any],
    conditions: Sequence[Condition],
    generation: int,
    now: str,
) -> tuple[dict[str, Any], list[StatusCondition]]:
    """The autoscaler's write: its `fields` and its conditions, every other condition kept; and its
    conditions as written (to compare with the old ones for Events)."""
    ours = merge(old.conditions, conditions, generation, now)
    kept = [c for c in old.conditions if c.type not in {c.type for c in conditions}]
    patch = ModelDeploymentStatus.model_validate({**fields, "conditions": [c.to_patch() for c in kept + ours]})
    return patch.to_patch(), ours


def batch_patch(
    old: BatchInferenceStatus, fields: Mapping[str, Any], conditions: Sequence[Condition], generation: int, now: str
) -> dict[str, Any] | None:
    """The batch reconciler's write: the whole status, or None when only transition times would move."""
    merged = merge(old.conditions, conditions, generation, now)
    new = BatchInferenceStatus.model_validate(
        {**fields, "observedGeneration": generation, "conditions": [c.to_patch() for c in merged]}
    ).to_patch()
    before = old.to_patch()
    if all(_comparable(before.get(k), k) == _comparable(v, k) for k, v in new.items()):
        return None
    return new


def _comparable(value: Any, key: str) -> Any:
    if key == "conditions" and isinstance(value, list):
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
    return value
