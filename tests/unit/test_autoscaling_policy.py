"""The autoscaling policy, tick by tick: the cases the operator, `frugal up` and the benchmark rely on."""

from __future__ import annotations

import itertools
import math

import pytest

from frugal.operator.decision.autoscaling import (
    Memory,
    Observation,
    ScaleReason,
    ShardObservation,
    Targets,
    recommend,
)
from frugal.operator.decision.observations import (
    histogram_quantile,
    observation,
    parse_scrape,
    queries,
    samples_from_prometheus,
    samples_from_scrapes,
)

TARGETS = Targets(
    slo_p95_ms=50.0,
    capacity_rps=100.0,
    min_replicas=1,
    max_replicas=8,
    stabilization_window_s=60.0,
    cost_per_replica_hour=0.5,
    price_per_kwh=0.15,
    idle_watts=10.0,
    max_watts=60.0,
)


def shard(rate: float, p95: float | None, replicas: int, queue: float = 0.0) -> ShardObservation:
    return ShardObservation(
        request_rate=rate, latency_p95_ms=p95, queue_depth=queue, replicas=replicas, ready=replicas
    )


def one(rate: float, p95: float | None, replicas: int, queue: float = 0.0) -> Observation:
    return Observation((shard(rate, p95, replicas, queue),))


def run(ticks: list[tuple[float, Observation]], start: tuple[int, ...], targets: Targets = TARGETS) -> list:
    """Feed ticks (time, observation) through the policy, actuating each answer at once."""
    current, memory, answers = start, Memory(), []
    for now, seen in ticks:
        adjusted = Observation(
            tuple(
                ShardObservation(
                    s.request_rate,
                    s.latency_p95_ms,
                    s.queue_depth,
                    s.inflight,
                    s.mean_batch_size,
                    s.watts,
                    n,
                    n,
                )
                for s, n in zip(seen.shards, current, strict=True)
            ),
            seen.stale,
        )
        answer, memory = recommend(adjusted, current, targets, memory, now)
        answers.append(answer)
        current = answer.replicas
    return answers


def test_load_above_capacity_scales_up_at_once_to_what_the_rate_needs() -> None:
    answer, _ = recommend(one(350.0, 45.0, 1), (1,), TARGETS, Memory(), 0.0)
    assert answer.replicas == (math.ceil(350 / (100 * TARGETS.target_utilisation)),)
    assert answer.reason is ScaleReason.LOAD_ABOVE_CAPACITY
    assert "1 replicas -> 5 replicas" in answer.message


def test_latency_above_slo_scales_in_proportion_and_learns_the_lower_capacity() -> None:
    answer, memory = recommend(one(60.0, 150.0, 2), (2,), TARGETS, Memory(), 0.0)
    assert answer.reason is ScaleReason.LATENCY_ABOVE_SLO
    assert answer.replicas == (6,)  # 2 replicas x 150 ms / 50 ms
    assert memory.capacity_rps == (30.0,)  # it served 30 req/s per replica while breaching


def test_a_growing_queue_adds_a_replica_even_when_the_rate_looks_served() -> None:
    first, memory = recommend(one(120.0, 45.0, 2, queue=2.0), (2,), TARGETS, Memory(), 0.0)
    assert first.replicas == (2,) and first.reason is ScaleReason.STEADY
    second, _ = recommend(one(120.0, 45.0, 2, queue=20.0), (2,), TARGETS, memory, 15.0)
    assert second.replicas == (3,) and second.reason is ScaleReason.QUEUE_GROWING


def test_scale_down_waits_for_the_window_then_moves_in_bounded_steps() -> None:
    busy = [(t, one(500.0, 45.0, 1)) for t in (0.0, 15.0)]
    quiet = [(t, one(5.0, 5.0, 1)) for t in range(30, 300, 15)]
    answers = run(busy + quiet, (1,))
    counts = [a.replicas[0] for a in answers]
    assert counts[0] == 8  # ceil(500 / 70) = 8
    window_end = next(
        i for i, (t, _) in enumerate(busy + quiet) if t >= 15.0 + TARGETS.stabilization_window_s
    )
    assert all(c == 8 for c in counts[:window_end])
    assert {a.reason for a in answers[2:window_end]} == {ScaleReason.STABILIZING}
    falling = counts[window_end:]
    assert falling[0] == 4 and all(b >= a // 2 for a, b in itertools.pairwise(counts))
    assert counts[-1] == 1 and answers[-1].reason in {ScaleReason.STEADY, ScaleReason.HEADROOM}


def test_flapping_input_does_not_flap_the_replicas() -> None:
    ticks = [(t * 15.0, one(300.0 if t % 2 == 0 else 10.0, 45.0, 1)) for t in range(12)]
    counts = [a.replicas[0] for a in run(ticks, (1,))]
    changes = sum(1 for a, b in itertools.pairwise(counts) if a != b)
    assert counts[0] == 5 and changes == 0


def test_bounds_min_and_max() -> None:
    high, _ = recommend(one(5000.0, 400.0, 8), (8,), TARGETS, Memory(), 0.0)
    assert high.replicas == (8,) and high.reason is ScaleReason.AT_MAXIMUM
    bounded = Targets(**{**TARGETS.__dict__, "min_replicas": 3})
    low, _ = recommend(one(0.0, None, 3), (3,), bounded, Memory(), 0.0)
    assert low.replicas == (3,)
    rising, _ = recommend(one(100.0, 400.0, 2), (2,), TARGETS, Memory(), 0.0)
    assert (
        rising.replicas == (8,) and rising.reason is ScaleReason.LATENCY_ABOVE_SLO
    )  # the cause, up to the max
    lowered = Targets(**{**TARGETS.__dict__, "max_replicas": 2})
    above, _ = recommend(one(100.0, 10.0, 5), (5,), lowered, Memory(), 0.0)
    assert above.replicas == (2,)


def test_stale_metrics_hold_the_count_and_say_why() -> None:
    stale = Observation((shard(0.0, None, 4),), stale="query request_rate failed: connection refused")
    answer, memory = recommend(stale, (4,), TARGETS, Memory(capacity_rps=(80.0,)), 0.0)
    assert answer.replicas == (4,) and answer.reason is ScaleReason.METRICS_STALE
    assert "connection refused" in answer.message
    assert memory == Memory(capacity_rps=(80.0,))
    missing, _ = recommend(None, (2, 3), TARGETS, Memory(), 0.0)
    assert missing.replicas == (2, 3) and missing.reasons == (ScaleReason.METRICS_STALE,) * 2


def test_without_metrics_an_edited_minimum_or_maximum_still_applies() -> None:
    """Seen on the real node: minReplicas raised to 2 while Prometheus was unreachable left 1 replica."""
    stale = Observation((shard(0.0, None, 1),), stale="query request_rate failed: connection refused")
    raised = Targets(**{**TARGETS.__dict__, "min_replicas": 2})
    up, _ = recommend(stale, (1,), raised, Memory(), 0.0)
    assert up.replicas == (2,) and up.reason is ScaleReason.METRICS_STALE
    lowered = Targets(**{**TARGETS.__dict__, "max_replicas": 3})
    down, _ = recommend(None, (5, 2), lowered, Memory(), 0.0)
    assert down.replicas == (3, 2)


def test_a_sharded_pipeline_scales_its_bottleneck_stage_only() -> None:
    front = ShardObservation(request_rate=120.0, latency_p95_ms=120.0, queue_depth=0.0, replicas=2, ready=2)
    back = ShardObservation(request_rate=120.0, latency_p95_ms=100.0, queue_depth=30.0, replicas=2, ready=2)
    answer, _ = recommend(Observation((front, back)), (2, 2), TARGETS, Memory(), 0.0)
    assert answer.replicas[0] == 2 and answer.replicas[1] > 2
    assert answer.reasons == (ScaleReason.STEADY, ScaleReason.LATENCY_ABOVE_SLO)


def test_a_power_cap_that_binds_keeps_the_best_count_inside_it() -> None:
    capped = Targets(**{**TARGETS.__dict__, "cap_watts": 150.0})
    uncapped, _ = recommend(one(700.0, 45.0, 2), (2,), TARGETS, Memory(), 0.0)
    answer, _ = recommend(one(700.0, 45.0, 2), (2,), capped, Memory(), 0.0)
    assert uncapped.replicas == (8,) and uncapped.watts > 150.0
    # 2 replicas draw 2 x 10 W idle + 2 x 50 W busy = 120 W; a third would take 180 W.
    assert answer.replicas == (2,) and answer.watts == pytest.approx(120.0)
    assert answer.reason is ScaleReason.POWER_CAPPED and "cap 150 W" in answer.message


def test_a_power_cap_goes_to_the_most_loaded_shard() -> None:
    capped = Targets(**{**TARGETS.__dict__, "cap_watts": 200.0})
    light = ShardObservation(request_rate=50.0, latency_p95_ms=45.0, replicas=1, ready=1)
    heavy = ShardObservation(request_rate=50.0, latency_p95_ms=45.0, queue_depth=40.0, replicas=1, ready=1)
    learned = Memory(capacity_rps=(100.0, 10.0))
    answer, _ = recommend(Observation((light, heavy)), (1, 1), capped, learned, 0.0)
    assert answer.replicas[0] == 1 and answer.replicas[1] > 1
    assert answer.reasons[1] is ScaleReason.POWER_CAPPED and answer.watts <= 200.0


def test_cost_and_watts_are_predicted_for_the_recommended_count() -> None:
    answer, _ = recommend(one(140.0, 20.0, 2), (2,), TARGETS, Memory(), 0.0)
    assert answer.replicas == (2,)
    watts = 2 * 10.0 + (140.0 / 100.0) * 50.0
    assert answer.watts == pytest.approx(watts)
    assert answer.cost_per_hour == pytest.approx(2 * 0.5 + watts / 1000 * 0.15)


def test_capacity_rises_when_a_shard_serves_more_than_estimated_well_inside_the_slo() -> None:
    _, memory = recommend(one(180.0, 10.0, 1), (1,), TARGETS, Memory(), 0.0)
    assert memory.capacity_rps == (180.0,)


# -- observations: PromQL answers and scrapes ------------------------------------------------------


def test_queries_group_every_metric_by_namespace_model_and_shard() -> None:
    for source in ("estimate", "dcgm", "kepler"):
        for promql in queries(source).values():
            assert "by (namespace, model, shard" in promql
    assert "DCGM_FI_DEV_POWER_USAGE" in queries("dcgm")["watts"]
    assert "kepler_container_joules_total" in queries("kepler")["watts"]
    with pytest.raises(ValueError, match="expected one of estimate, dcgm, kepler"):
        queries("nvml")


def test_prometheus_answers_become_one_observation_per_model() -> None:
    def series(shard: str, value: float) -> dict:
        return {"metric": {"namespace": "ml", "model": "digits", "shard": shard}, "value": [0, str(value)]}

    samples = samples_from_prometheus(
        {
            "request_rate": [series("0", 12.5), series("1", 12.0)],
            "latency_p95_seconds": [series("0", 0.04), series("1", float("nan"))],
            "queue_depth": [series("1", 3)],
        }
    )
    seen = observation("ml", "digits", (2, 1), (2, 1), samples)
    assert seen.stale is None
    assert seen.request_rate == 12.5 and seen.latency_p95_ms == pytest.approx(40.0)
    assert seen.shards[1].latency_p95_ms is None and seen.shards[1].queue_depth == 3
    unseen = observation("ml", "other", (1,), (1,), samples)
    assert unseen.stale is not None and "ml/other shard 0" in unseen.stale
    failed = observation("ml", "digits", (2, 1), (2, 1), {}, failed="query watts failed: timeout")
    assert failed.stale == "query watts failed: timeout"


def exposition(requests: int, buckets: dict[str, int], queue: int) -> str:
    lines = ["# TYPE frugal_request_duration_seconds histogram"]
    for le, count in buckets.items():
        lines.append(f'frugal_request_duration_seconds_bucket{{model="m",shard="0",le="{le}"}} {count}')
    lines += [
        f'frugal_request_duration_seconds_count{{model="m",shard="0"}} {requests}',
        f'frugal_request_duration_seconds_sum{{model="m",shard="0"}} {requests * 0.01}',
        "# TYPE frugal_queue_depth gauge",
        f'frugal_queue_depth{{model="m",shard="0"}} {queue}',
    ]
    return "\n".join(lines) + "\n"


def test_two_scrapes_give_rate_and_p95_as_prometheus_would() -> None:
    before = parse_scrape(exposition(100, {"0.01": 100, "0.05": 100, "+Inf": 100}, 0), at=0.0)
    after = parse_scrape(exposition(300, {"0.01": 150, "0.05": 290, "+Inf": 300}, 7), at=10.0)
    sample = samples_from_scrapes([(before, after)])
    assert sample.get("request_rate") == pytest.approx(20.0)
    # 200 new requests: rank 190 falls in (0.01, 0.05] holding 50..190 -> its upper bound.
    assert sample.get("latency_p95_seconds") == pytest.approx(0.05)
    assert sample.get("queue_depth") == 7


def test_histogram_quantile_interpolates_and_handles_inf_and_empty() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.95, [(0.1, 10.0), (math.inf, 100.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_a_slow_p95_from_a_trickle_of_requests_neither_scales_nor_cuts_the_capacity() -> None:
    targets = Targets(slo_p95_ms=5.0, capacity_rps=4944.0, max_replicas=3)
    trickle = Observation((ShardObservation(request_rate=6.0, latency_p95_ms=6.7, replicas=1, ready=1),))
    answer, memory = recommend(trickle, (1,), targets, Memory(), 0.0)
    assert answer.replicas == (1,) and memory.capacity_rps == (4944.0,)
    busy = Observation((ShardObservation(request_rate=400.0, latency_p95_ms=9.0, replicas=1, ready=1),))
    answer, memory = recommend(busy, (1,), targets, Memory(), 0.0)
    assert answer.reason is ScaleReason.LATENCY_ABOVE_SLO and memory.capacity_rps == (400.0,)


def test_a_growing_queue_teaches_the_capacity_so_the_next_tick_does_not_scale_back() -> None:
    answers = run([(0.0, one(285.0, 4.0, 1, queue=1.0)), (2.0, one(285.0, 4.0, 1, queue=12.0))]
                  + [(2.0 + 2 * t, one(400.0, 4.2, 1)) for t in range(1, 10)], (1,),
                  Targets(slo_p95_ms=5.0, capacity_rps=4944.0, max_replicas=4,
                          stabilization_window_s=10.0))  # fmt: skip
    counts = [a.replicas[0] for a in answers]
    assert counts[1] >= 2 and answers[1].reason is ScaleReason.QUEUE_GROWING
    assert min(counts[1:]) >= 2  # 400 req/s after 285 overloaded one replica: no Headroom back to 1


def test_targets_refuse_what_the_policy_cannot_work_with() -> None:
    with pytest.raises(ValueError, match="capacity greater than 0"):
        Targets(slo_p95_ms=5.0, capacity_rps=0.0)
    with pytest.raises(ValueError, match="max_replicas"):
        Targets(slo_p95_ms=5.0, capacity_rps=10.0, min_replicas=3, max_replicas=2)


def test_a_restarted_replica_counts_its_buckets_from_zero() -> None:
    before = parse_scrape(exposition(500, {"0.01": 400, "0.05": 500, "+Inf": 500}, 0), at=0.0)
    after = parse_scrape(exposition(40, {"0.01": 40, "0.05": 40, "+Inf": 40}, 0), at=10.0)
    sample = samples_from_scrapes([(before, after)])
    assert sample.get("request_rate") == pytest.approx(4.0)
    assert sample.get("latency_p95_seconds") == pytest.approx(0.0095)  # all 40 new ones in the first bucket


SLEEPY = Targets(slo_p95_ms=50.0, capacity_rps=100.0, min_replicas=0, max_replicas=4,
                 stabilization_window_s=30.0, scale_to_zero_after_s=60.0)  # fmt: skip


def test_no_requests_for_the_idle_time_scales_every_shard_to_zero() -> None:
    quiet = Observation((shard(0.0, None, 2), shard(0.0, None, 1)))
    memory = Memory()
    for now in (0.0, 30.0):
        answer, memory = recommend(quiet, (2, 1), SLEEPY, memory, now)
        assert answer.replicas != (0, 0)
    answer, memory = recommend(quiet, (2, 1), SLEEPY, memory, 60.0)
    assert answer.replicas == (0, 0) and answer.reason is ScaleReason.IDLE
    assert "no requests for 60 s" in answer.message and answer.cost_per_hour == 0.0
    asleep, _ = recommend(
        Observation((shard(0.0, None, 0), shard(0.0, None, 0))), (0, 0), SLEEPY, memory, 90.0
    )
    assert asleep.replicas == (0, 0) and asleep.reason is ScaleReason.IDLE


def test_a_held_request_wakes_every_stage_at_once() -> None:
    held = Observation((shard(0.0, None, 0), shard(0.0, None, 0)), held_requests=3.0)
    answer, memory = recommend(held, (0, 0), SLEEPY, Memory(last_demand_at=0.0), 500.0)
    assert answer.replicas == (1, 1) and answer.reason is ScaleReason.WAKING
    assert memory.last_demand_at == 500.0 and memory.recommendations == ((500.0, (1, 1)),)
    busy_wake, _ = recommend(
        Observation((shard(0.0, None, 0),), held_requests=250.0), (0,), SLEEPY, Memory(), 0.0
    )
    assert busy_wake.replicas == (4,)  # 250 held at once: as many as the burst needs, within the maximum


def test_without_a_wake_up_path_min_zero_still_keeps_one_replica() -> None:
    no_front = Targets(**{**SLEEPY.__dict__, "scale_to_zero_after_s": None})
    answer, _ = recommend(one(0.0, None, 1), (1,), no_front, Memory(last_demand_at=-1e6), 0.0)
    assert answer.replicas == (1,)


def test_a_shard_whose_ready_count_just_changed_does_not_teach_the_capacity() -> None:
    # One replica, steady for a window; then two, and the windowed rate still mixes both counts.
    _, memory = recommend(one(60.0, 20.0, 1), (1,), TARGETS, Memory(), 0.0)
    assert memory.capacity_rps == (100.0,)
    joined = Observation((ShardObservation(request_rate=90.0, latency_p95_ms=150.0, queue_depth=9.0,
                                           replicas=2, ready=2),))  # fmt: skip
    answer, memory = recommend(joined, (2,), TARGETS, memory, 15.0)
    assert memory.capacity_rps == (100.0,)  # not 45: the rate per ready replica is not one yet
    assert answer.reason is not ScaleReason.LATENCY_ABOVE_SLO  # the breach predates the new replica
    later, memory = recommend(joined, (2,), TARGETS, memory, 15.0 + TARGETS.metrics_window_s)
    assert memory.capacity_rps == (45.0,) and later.reason is ScaleReason.LATENCY_ABOVE_SLO


def test_a_breach_steps_once_while_the_replicas_it_asked_for_start() -> None:
    breach = one(150.0, 150.0, 2, queue=10.0)
    answer, memory = recommend(breach, (2,), TARGETS, Memory(), 0.0)
    assert answer.replicas == (6,) and answer.reason is ScaleReason.LATENCY_ABOVE_SLO
    # The next tick still sees the breach in its window, with the new replicas not ready yet.
    starting = Observation((ShardObservation(request_rate=150.0, latency_p95_ms=150.0, queue_depth=10.0,
                                             replicas=6, ready=2),))  # fmt: skip
    again, _ = recommend(starting, (6,), TARGETS, memory, 15.0)
    assert again.replicas == (6,)


def test_a_growing_queue_adds_what_its_growth_per_second_needs() -> None:
    _, memory = recommend(one(100.0, 45.0, 2, queue=5.0), (2,), TARGETS, Memory(), 0.0)
    answer, _ = recommend(one(100.0, 45.0, 2, queue=5.0 + 15 * 140.0), (2,), TARGETS, memory, 15.0)
    # Behind, each replica answers 50 req/s (the new estimate); 140 req/s more arrive than are
    # answered: four more replicas at 70% of 50 req/s each.
    assert memory.capacity_rps == (100.0,) and answer.capacity_rps == (50.0,)
    assert answer.reason is ScaleReason.QUEUE_GROWING and answer.replicas == (2 + math.ceil(140 / 35),)


def test_a_capacity_estimate_that_is_too_low_rises_by_probing_and_stops_below_an_overshoot() -> None:
    low = Targets(slo_p95_ms=50.0, capacity_rps=100.0, max_replicas=80, stabilization_window_s=60.0)
    current, memory, capacities = (50,), Memory(), []
    for tick in range(40):  # 3500 req/s, each replica really does 250 within the SLO, p95 5 ms
        now = tick * 15.0
        answer, memory = recommend(one(3500.0, 5.0, current[0]), current, low, memory, now)
        current = answer.replicas
        capacities.append(memory.capacity_rps[0])
    assert capacities[0] == 100.0 and capacities[-1] > 150.0  # learnt upwards, a window at a time
    assert all(b / a <= 1.0 + low.probe_step + 1e-9 for a, b in itertools.pairwise(capacities))
    assert current[0] < 40  # fewer replicas than the profiled number asks for (3500 / 70)
    # An overshoot (breach at the bottleneck) lowers it to what a replica served, and caps the probes.
    over = Observation((ShardObservation(request_rate=3500.0, latency_p95_ms=120.0, queue_depth=40.0,
                                         replicas=current[0], ready=current[0]),))  # fmt: skip
    for tick in range(6):  # held for a window (the new count not actuated), so the shard is steady
        _, memory = recommend(over, current, low, memory, 40 * 15.0 + tick * 15.0)
    ceiling = memory.ceiling_rps[0]
    assert memory.capacity_rps[0] == pytest.approx(3500.0 / current[0]) and ceiling == capacities[-1]


def test_what_the_fronts_hold_is_read_per_model_and_wakes_a_model_at_zero() -> None:
    from frugal.operator.decision.observations import front_queries, held_from_prometheus

    promql = front_queries("30s")["held_requests"]
    assert "max_over_time(frugal_front_held_requests[30s])" in promql and "by (namespace, model)" in promql
    held = held_from_prometheus(
        [
            {"metric": {"namespace": "ml", "model": "digits"}, "value": [0, "2"]},
            {"metric": {"namespace": "ml", "model": "other"}, "value": [0, "NaN"]},
            {"metric": {"model": "no-namespace"}, "value": [0, "5"]},
        ]
    )
    assert held == {("ml", "digits"): 2.0, ("ml", "other"): 0.0}
    # At zero replicas no shard has series, and that is not stale: only held requests say "demand".
    asleep = observation("ml", "digits", (0,), (0,), {}, held_requests=held[("ml", "digits")])
    assert asleep.stale is None and asleep.demand
    targets = Targets(slo_p95_ms=50.0, capacity_rps=100.0, min_replicas=0, scale_to_zero_after_s=60.0)
    answer, _ = recommend(asleep, (0,), targets, Memory(), 0.0)
    assert answer.replicas == (1,) and answer.reason is ScaleReason.WAKING
    quiet = observation("ml", "other", (0,), (0,), {}, held_requests=held[("ml", "other")])
    answer, _ = recommend(quiet, (0,), targets, Memory(), 0.0)
    assert answer.replicas == (0,) and answer.reason is ScaleReason.IDLE


def test_a_model_its_front_woke_stays_awake_for_the_idle_window_from_the_wake() -> None:
    # Put to sleep by the policy, then woken by its front (1 replica set by someone else) before any
    # held request or request rate reaches the metrics: the wake itself is the demand.
    quiet = Observation((shard(0.0, None, 0),))
    asleep, memory = recommend(quiet, (0,), SLEEPY, Memory(last_demand_at=0.0), 100.0)
    assert asleep.replicas == (0,) and asleep.reason is ScaleReason.IDLE
    woken = Observation((shard(0.0, None, 1),))
    answer, memory = recommend(woken, (1,), SLEEPY, memory, 101.0)
    assert answer.replicas == (1,) and memory.last_demand_at == 101.0
    for now in (130.0, 160.0):  # within scaleToZeroAfterSeconds of the wake: no flap back to zero
        answer, memory = recommend(woken, (1,), SLEEPY, memory, now)
        assert answer.replicas == (1,), now
    answer, _ = recommend(woken, (1,), SLEEPY, memory, 161.0)
    assert answer.replicas == (0,) and answer.reason is ScaleReason.IDLE  # idle for the window since
    # Without a sleep of its own to compare with (a restarted operator), a running model is not "woken".
    _, fresh = recommend(woken, (1,), SLEEPY, Memory(last_demand_at=0.0), 200.0)
    assert fresh.last_demand_at == 0.0
