"""frugal in the simulation: the operator's autoscaler tick, driven the way the operator drives it.

Every tick :class:`Frugal` calls :func:`frugal.operator.decision.tick.run_tick`, the function the
operator's autoscaler (``frugal.operator.control.scaler``) and ``frugal up``'s
(``frugal.operator.local.autoscaler``) call every tick, with the ModelDeployment this run is (the
example's, with ``spec.autoscaling`` saying what the run's targets say: :func:`row_spec`), the status
the operator would hold (``status.variants``, ``selected`` and, after a rollover, ``replan``), the
targets, the replica counts and the Observation the simulation built; it keeps the TickMemory the
tick returns for the next. The tick runs the policy
(:func:`~frugal.operator.decision.autoscaling.recommend`) and, with a :class:`Replanner`, prices the
plan again at the observed rate (:func:`~frugal.operator.decision.scaling.plan_at_load`) and decides
whether to roll over (:func:`~frugal.operator.decision.replanning.replan`, with the operator's checks
around it: :func:`~frugal.operator.decision.scaling.replan_at_load`). This module acts on the
outcome: the replica count, and a rollover's order (the target and its replicas).

What the driver decides, not the tick: while a rollover is under way the simulation keeps serving and
autoscaling the option that serves, and the tick is not asked to re-plan (``replan_settings=None``;
the operator's own tick skips re-planning then because the new revision has no ready replica yet).
Once every new pod is ready, status.selected and status.replan name the new option and the
ModelDeployment carries the rollover's serving revision, so the tick starts the policy afresh on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import ModelDeploymentSpec, parse_model_deployment
from frugal.operator.decision.autoscaling import Memory, Targets
from frugal.operator.decision.planner import Option
from frugal.operator.decision.replanning import ReplanSettings
from frugal.operator.decision.revisions import rollover_from_status, with_revision
from frugal.operator.decision.tick import RolloverOrder, TickInput, TickMemory, run_tick

from .options import ReplanSetup, ServedOption, option_targets
from .peers import View


def row_spec(md: ModelDeploymentSpec, targets: Targets, replan_window_s: float | None) -> ModelDeploymentSpec:
    """`md` with ``spec.autoscaling`` saying what `targets` say (the run's replica bounds,
    stabilisation window, scale to zero, power cap and price) and re-planning on with a window of
    `replan_window_s`, or off (None): the ModelDeployment the operator would run this row for. The
    tick reads the spec beside the targets: minReplicas decides whether an idle model is priced
    (``scaling.plan_at_load``), minReplicas and maxReplicas bound a rollover's replicas
    (``scaling.rollover_replicas``), and ``replanning.enabled`` whether it re-plans at all."""
    document = md.resource.to_dict()
    autoscaling = document["spec"]["autoscaling"]
    autoscaling["minReplicas"] = targets.min_replicas
    autoscaling["maxReplicas"] = targets.max_replicas
    autoscaling["stabilizationWindowSeconds"] = round(targets.stabilization_window_s)
    if targets.scale_to_zero_after_s is not None:
        autoscaling["scaleToZeroAfterSeconds"] = round(targets.scale_to_zero_after_s)
    power = autoscaling["power"]
    power["pricePerKWh"] = str(targets.price_per_kwh)
    if targets.cap_watts is None:
        power.pop("capWatts", None)
    else:
        power["capWatts"] = targets.cap_watts
    replanning = autoscaling["replanning"]
    replanning["enabled"] = replan_window_s is not None
    if replan_window_s is not None:
        replanning["windowSeconds"] = round(replan_window_s)
    return parse_model_deployment(document)


class Replanner:
    """Re-planning in one run: the options it chooses among and the status the operator would hold
    about them; the tick (through :class:`Frugal`) decides, this counts its decisions and turns a
    rollover's order into the target option and its replicas. A run starts on `start` (the
    deploy-time plan's choice); a rollover's target starts with the replicas the operator's order
    gives it (the plan's count at the load, within the spec's bounds: ``scaling.rollover_replicas``),
    under the same policy started afresh, whose capacity prior is the target's throughput as the
    plan has it (``ServedOption.prior_rps``: the profiled one unless the setup is priced with measured
    capacity)."""

    def __init__(self, setup: ReplanSetup, targets: Targets, settings: ReplanSettings, start: Option) -> None:
        self.setup, self.targets, self.settings, self.start = setup, targets, settings, start
        self.reasons: Counter[str] = Counter()
        self.messages: list[str] = []
        self.rollovers = 0

    def status(self, running: Option, replan: Mapping[str, Any] | None = None) -> ModelDeploymentStatus:
        """The status the tick reads: every option's profiled row (status.variants), the option
        serving (status.selected) and the last rollover (status.replan)."""
        selected = {"variant": running.variant, "hardwareProfile": running.profile, "shards": running.shards}
        status: dict[str, Any] = {"variants": self.setup.status["variants"], "selected": selected}
        if replan is not None:
            status["replan"] = dict(replan)
        typed = ModelDeploymentStatus.from_status(status)
        assert len(typed.variants) == len(status["variants"]), "status.variants not read whole"
        return typed

    def ordered(self, order: RolloverOrder, now: float) -> tuple[ServedOption, int]:
        """The tick rolled over: the target option and the replicas it starts with."""
        decision = order.decision
        assert decision.target is not None
        count = order.rollover.replicas
        self.rollovers += 1
        self.messages.append(f"t={now:.0f}s {decision.message} (starting {count})")
        return self.setup.options[decision.target], count


class Frugal:
    """The operator's tick, with its TickMemory carried from tick to tick: the policy alone, or with
    a `replanner` re-planning too (in the same tick, after the policy, at the rate it saw)."""

    def __init__(
        self,
        md: ModelDeploymentSpec,
        targets: Targets,
        name: str = "frugal",
        replanner: Replanner | None = None,
    ) -> None:
        self.name = name
        self.targets = targets
        self.replanner = replanner
        if replanner is None:
            # Nothing to price: no status.variants, no profiles (the tick's plan at load is None).
            self.md = row_spec(md, targets, None)
            self.status = ModelDeploymentStatus()
        else:
            self.md = row_spec(replanner.setup.md, targets, replanner.settings.window_s)
            self.status = replanner.status(replanner.start)
        self.memory = TickMemory()
        self.reasons: Counter[str] = Counter()
        self.messages: list[str] = []
        self.rollover: RolloverOrder | None = None  # the last tick's order, if it rolled over

    def decide(self, view: View) -> int:
        replanner = self.replanner
        replanning = replanner is not None and not view.rolling_over
        outcome = run_tick(
            TickInput(
                self.md,
                self.status,
                self.targets,
                (view.requested,),
                (view.ready,),
                view.observation,
                {} if replanner is None else replanner.setup.profiles,
                view.now,
                view.now,  # re-planning's clock: the simulation's too
                replanner.settings if replanning and replanner is not None else None,
            ),
            self.memory,
        )
        self.memory = outcome.memory
        recommendation = outcome.recommendation
        self.reasons[recommendation.reason.value] += 1
        if outcome.scale:
            self.messages.append(f"t={view.now:.0f}s {recommendation.message}")
        if replanner is not None and outcome.replan is not None:
            replanner.reasons[outcome.replan.reason.value] += 1
        self.rollover = outcome.rollover
        return recommendation.replicas[0]

    def serve(self, option: ServedOption, order: RolloverOrder) -> None:
        """Every pod of the rollover's target is ready and the traffic has moved: status.selected and
        status.replan name it (as the reconciler and the tick write them), the ModelDeployment carries
        the rollover's serving revision (the tick starts the policy afresh on it) and the targets are
        the option's."""
        assert self.replanner is not None
        self.status = self.replanner.status(option.choice, order.replan_status)
        self.md = with_revision(self.md, rollover_from_status(self.md, self.status))
        self.targets = option_targets(self.replanner.targets, option)

    @property
    def policy_memory(self) -> Memory:
        """The policy's memory of the option serving now (fresh until the tick has run on it)."""
        owner = self.md.owner
        fresh = self.memory.revision != (owner.generation, owner.revision)
        return Memory() if fresh else self.memory.policy
