"""Autoscaling benchmark: frugal's policy against static, HPA-style and KEDA-style scaling on traces.

A trace-driven simulation. Every 15 s (the policy's tick) each autoscaler sees the metrics of the last
interval and sets a replica count; replicas asked for become ready after the measured pod start time.
frugal runs :func:`frugal.operator.decision.tick.run_tick` — the tick the operator's autoscaler and
``frugal up``'s run, policy (``recommend``) and re-planning in one pure function — fed an Observation
built by the operator's own :func:`observations.observation` from what Prometheus would answer
(``rate(...[1m])`` of completed requests, ``histogram_quantile(0.95, ...)`` over the server's latency
buckets, the queue/in-flight/power gauges), the run's ModelDeployment (the example's, its
``spec.autoscaling`` saying what the run's targets say: minReplicas, maxReplicas, scale to zero) and
the status the operator would hold; its TickMemory carries from tick to tick. The peers:

* static: the fewest replicas that keep the trace's peak within the SLO (measured), never changed;
* HPA-style: CPU utilisation target with the HPA's defaults (15 s sync, 10% tolerance, unready pods
  counted at 0% on scale-up, scale-up limit max(100%, 4 pods) per 15 s, scale-down stabilisation =
  the highest recommendation of the last 300 s);
* KEDA-style: the Prometheus scaler's ``desired = ceil(rps / threshold)`` (an AverageValue external
  metric: the same 10% tolerance) fed to the same HPA behaviour.

Inputs are measured on this machine with frugal's own code (``--measure``; otherwise the stored
``benchmarks/measurements/autoscaling-<model>.json`` is used, measured when missing):

1. the example's compression Job (``frugal compress`` with the operator's config for
   ``examples/<model>.yaml``), its profiling Job (``python -m frugal.serving.profiling``) and the
   operator's planner: the chosen variant and one replica's capacity (the plan row's throughput);
2. a latency-versus-load curve of one real ``frugal serve`` replica (the operator's serve command):
   closed-loop saturation throughput, then Poisson open-loop arrivals at fractions of it, recording
   the latency quantiles, the server's CPU and its mean batch size per point;
3. the pod start time: seconds from starting ``frugal serve`` to ``/v2/health/ready`` answering 200.

Replica model: per-replica rate r below saturation → latency distribution interpolated (per
quantile) between the measured points; at or above saturation a fluid FIFO queue grows at
``rate - replicas x saturation`` (capped at the server's ``maxQueueSize`` per replica: beyond it
requests are refused, 429) and every request waits ``queue / (replicas x saturation)`` on top of the
saturated latency; the backlog carries over to the next interval. SLO attainment is the share of
all requests answered within the p95 target. Cost = replica-hours (replicas asked for, starting ones
included) x costPerHour + kWh x 0.15 USD; power = idle watts per replica + (max - idle) x busy share.

Re-planning (issue 13; ``--replan-window``, ``--no-replanning``): the same tick re-plans after the
policy, at the rate the policy saw (``scaling.plan_at_load`` over a status.variants with every
profiled variant on two hardware profiles, then ``replanning.replan``; the planner's 10% tolerance;
window 300 s and cooldown 600 s by default). A rollover starts the target's replicas (the tick's
order: the plan's count at that load, within minReplicas and maxReplicas) beside the serving ones,
costing from that moment; the serving option keeps serving and being autoscaled; once all the new
pods are ready the traffic (and any queue) moves to them, the old ones stop, status.selected and
status.replan name the new option and the tick starts the policy afresh on the new serving revision,
its prior the option's profiled throughput. No re-planning while a rollover is under way. A run starts where the
deploy-time plan (no expected load: each option's replica priced flat out) puts it. The second
profile is *modelled*, not measured (this machine has one kind of CPU): see ``OTHER_HARDWARE``
(``autoscaling_bench/options.py``) for what is assumed. The rows: frugal fixed on each profile, with re-planning, with re-planning
priced with the replicas' measured saturation instead of the profiling Job's numbers, and, where the
trace has idle time, with re-planning and minReplicas 0.

Traces (``t_seconds,rps`` CSV, linear interpolation): the shipped ones are in multiples of one
replica's measured SLO capacity (``--trace-unit capacity``, the default) and scaled per model; use
``--trace-unit rps`` for absolute request rates. ``--write-traces`` regenerates the shipped ones
(seeded, deterministic).

    python benchmarks/autoscaling.py                       # both models, every shipped trace
    python benchmarks/autoscaling.py --model digits --trace benchmarks/traces/spiky.csv --json
    python benchmarks/autoscaling.py --measure --model minilm   # re-measure, then simulate
    python benchmarks/autoscaling.py --replan-window 900        # re-planning with a 15-minute window
    python benchmarks/autoscaling.py --smoke                    # seconds: digits on one trace

The code is the package ``benchmarks/autoscaling_bench/`` beside this script (its ``__init__`` lists
the modules); this script is its command, and what ``benchmarks/cold_start.py`` imports of it.
"""

from __future__ import annotations

import sys

# The package beside this script (benchmarks/ is on sys.path: it is this script's directory, and
# benchmarks/cold_start.py puts it there before `import autoscaling`).
from autoscaling_bench.cli import main
from autoscaling_bench.measure import (
    CACHE,
    EXAMPLES,
    MEASUREMENTS,
    compress,
    load_example,
    machine,
    profile_and_plan,
    with_shard_counts,
)

# What other benchmarks use of it (cold_start.py: the examples, their cached compression, the machine).
__all__ = [
    "CACHE",
    "EXAMPLES",
    "MEASUREMENTS",
    "compress",
    "load_example",
    "machine",
    "main",
    "profile_and_plan",
    "with_shard_counts",
]

if __name__ == "__main__":
    sys.exit(main(__doc__))
