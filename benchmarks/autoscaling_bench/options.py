"""What re-planning chooses among: the options (variant, hardware profile) of a model, as the
operator would have them in status.variants, each with its simulated replica, price and power."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from frugal.operator.api.loading import parse_yaml
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.decision import decide, planner
from frugal.operator.decision.autoscaling import Targets
from frugal.operator.decision.planner import Option

from .measure import EXAMPLES, ROOT
from .replica import Replica

# ------------------------------------------------------------------------------------------ re-planning

# The other hardware re-planning may move a model to. This machine has one kind of CPU, so it is
# modelled, not measured: a replica of it is the measured replica with its rate axis stretched by
# `throughput_multiple` (the same latency distribution at the same utilisation, so that multiple of
# its queue and batch, up to maxBatchSize: Replica.scaled; the same pod start unless --replan-start-s
# says otherwise), and its profiled throughput is each variant's profiled row times the same multiple. MiniLM's is the example's own second profile (gpu-t4: the price and power
# of examples/hardwareprofiles.yaml) with an assumed 9x one CPU replica's throughput (~5,000
# sentences/s); digits' example names one profile, so its second is hypothetical: a 16-CPU share of
# the same CPU at 16x the throughput (linear scaling) and 16x the power, priced at 0.22 USD/h instead
# of 16 x 0.02 (a bigger share at a discount). Both multiples and the digits price are assumptions,
# chosen so that the cheaper option changes inside the traces' range (about 4.5 replicas' worth).
CPU_X16 = {
    "apiVersion": "frugal.dev/v1alpha1",
    "kind": "HardwareProfile",
    "metadata": {"name": "cpu-x16"},
    "spec": {
        "accelerator": {"kind": "cpu", "model": "x86-64", "count": 16},
        "resources": {"requests": {"cpu": "16", "memory": "8Gi"}, "limits": {"cpu": "16", "memory": "8Gi"}},
        "executionProvider": "CPUExecutionProvider",
        "costPerHour": "0.22",
        "power": {"idleWatts": 80, "maxWatts": 240},
    },
}


@dataclass(frozen=True)
class OtherHardware:
    profile: str  # a HardwareProfile of examples/hardwareprofiles.yaml, or CPU_X16's
    throughput_multiple: float  # assumed: one of its replicas serves this many measured replicas' worth
    document: dict[str, Any] | None = None  # the profile, when it is not in examples/hardwareprofiles.yaml


OTHER_HARDWARE = {
    "digits": OtherHardware("cpu-x16", 16.0, CPU_X16),
    "minilm": OtherHardware("gpu-t4", 9.0),
}


@dataclass(frozen=True)
class ServedOption:
    """One (variant, hardware profile) a run may serve on: its replica model, price and power."""

    choice: Option
    replica: Replica
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    measured: bool  # the replica measured on this machine (else scaled from it)
    prior_rps: float  # its throughput as the plan has it, and the policy's capacity prior on it


@dataclass
class ReplanSetup:
    """What re-planning prices with, as the operator would have it: the ModelDeployment with both
    profiles among spec.serving.hardwareProfiles, status.variants with every variant's profiled row
    on each, the HardwareProfiles, and a ServedOption for every row."""

    model: str
    md: ModelDeploymentSpec
    status: dict[str, Any]
    profiles: dict[str, HardwareProfileSpec]
    options: dict[Option, ServedOption]
    deployed: Option  # the deploy-time plan's choice (no expected load: a replica flat out)
    measured: Option
    other: OtherHardware


def replan_setup(
    model: str, data: dict[str, Any], start_s: float | None, measured_capacity: bool = False
) -> ReplanSetup:
    """`measured_capacity`: price every option (and start the policy on it) with its replica's
    measured saturation throughput instead of the profiling Job's number, as the main table's
    "frugal, measured capacity" row does for the policy alone."""
    example, other = EXAMPLES[model], OTHER_HARDWARE[model]
    documents = []
    for name in (example.file, "examples/hardwareprofiles.yaml"):
        documents += parse_yaml((ROOT / name).read_text(encoding="utf-8"), name)
    if other.document is not None:
        documents.append(other.document)
    document = next(d for d in documents if d.get("kind") == "ModelDeployment")
    serving = document["spec"]["serving"]
    if other.profile not in serving["hardwareProfiles"]:
        document = json.loads(json.dumps(document))  # a copy with the other profile added
        document["spec"]["serving"]["hardwareProfiles"] = [*serving["hardwareProfiles"], other.profile]
    md = parse_model_deployment(document)
    hardware = [parse_hardware_profile(d) for d in documents if d.get("kind") == "HardwareProfile"]
    profiles = {p.name: p for p in hardware if p.name in (example.hardware_profile, other.profile)}
    measured_replica = Replica.from_measurements(data, md.slo_p95_ms)
    rows = data["profiling"]["profile_rows"]
    base = next(float(r["throughputRps"]) for r in rows if r["name"] == data["variant"])
    multiples = {example.hardware_profile: 1.0, other.profile: other.throughput_multiple}
    # Sizes and accuracy drops are not in the measurement file: 0 here. Every variant profiled was
    # within the accuracy budget when measured (the plan_reason says so), so this changes no
    # feasibility; it only leaves ties among near-equal costs to power, then cost, then names.
    status = {
        "variants": [
            {
                "name": r["name"],
                "sizeBytes": 0,
                "metric": {"name": "accuracy", "drop": 0.0},
                "profiles": [
                    {
                        "hardwareProfile": name,
                        "shards": int(r.get("shards") or 1),
                        "latencyP95Ms": float(r["latencyP95Ms"]),
                        "throughputRps": float(r["throughputRps"]) * multiple,
                    }
                    for name, multiple in multiples.items()
                ],
            }
            for r in rows
        ]
    }
    options = {}
    for entry in status["variants"]:
        for row in entry["profiles"]:
            choice = Option(entry["name"], row["hardwareProfile"], row["shards"])
            profile = profiles[choice.profile]
            exact = choice.variant == data["variant"] and choice.profile == example.hardware_profile
            replica = (
                measured_replica
                if exact
                else measured_replica.scaled(
                    row["throughputRps"] / base,
                    md.max_batch_size,
                    start_s if choice.profile == other.profile else None,
                )
            )
            if measured_capacity:
                row["throughputRps"] = replica.saturation_rps
            options[choice] = ServedOption(
                choice,
                replica,
                float(profile.cost_per_hour),
                profile.idle_watts,
                profile.max_watts,
                exact,
                row["throughputRps"],
            )
    variants = [
        planner.Variant(
            entry["name"],
            entry["sizeBytes"],
            entry["metric"]["drop"],
            measurements=tuple(
                planner.Measurement(r["hardwareProfile"], r["latencyP95Ms"], r["throughputRps"], r["shards"])
                for r in entry["profiles"]
            ),
        )
        for entry in status["variants"]
    ]
    candidates = [decide.planner_profile(profiles[name]) for name in md.serving_profiles]
    deploy_time = planner.plan(variants, candidates, decide.objectives(md))
    if deploy_time.chosen is None:
        raise RuntimeError(f"the deploy-time plan chose nothing: {deploy_time.reason}")
    measured = Option(data["variant"], example.hardware_profile, md.shards)
    return ReplanSetup(model, md, status, profiles, options, Option.of(deploy_time.chosen), measured, other)


def option_label(setup: ReplanSetup, choice: Option) -> str:
    return (
        choice.profile
        if choice.variant == setup.measured.variant
        else f"{choice.variant} on {choice.profile}"
    )


def option_targets(targets: Targets, option: ServedOption) -> Targets:
    """The policy's targets on `option`: its `prior_rps` as the capacity prior, its price and power."""
    return dataclasses.replace(
        targets,
        capacity_rps=option.prior_rps,
        cost_per_replica_hour=option.cost_per_hour,
        idle_watts=option.idle_watts,
        max_watts=option.max_watts,
    )
