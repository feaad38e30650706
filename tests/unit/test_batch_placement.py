"""Batch placement: the hardware profile and worker count with the lowest cost per row."""

from __future__ import annotations

import pytest

from frugal.operator.decision import batch_placement
from frugal.operator.decision.batch_placement import Request, place
from frugal.operator.decision.planner import Profile

CPU = Profile("cpu", cost_per_hour=0.10, idle_watts=10, max_watts=30)
GPU = Profile("gpu", cost_per_hour=1.00, idle_watts=50, max_watts=200)


def request(rows: int | None = 1_000_000, **changes: object) -> Request:
    values: dict[str, object] = dict(rows=rows, workers=None, max_workers=4, deadline_s=None, price_per_kwh=0.15)
    values.update(changes)
    return Request(**values)  # type: ignore[arg-type]


def test_the_profile_with_the_lowest_cost_per_row_wins_not_the_fastest() -> None:
    # The GPU is 5x faster but 8x dearer per hour (energy included): the CPU scores rows cheaper.
    placement = place([CPU, GPU], {"cpu": 1000.0, "gpu": 5000.0}, request())
    assert placement.chosen is not None and placement.chosen.profile == "cpu"
    cpu, gpu = placement.options
    assert cpu.cost_per_million_rows is not None and gpu.cost_per_million_rows is not None
    assert gpu.cost_per_million_rows > cpu.cost_per_million_rows
    # Faster still and the GPU wins: the prices decide, per row.
    faster = place([CPU, GPU], {"cpu": 1000.0, "gpu": 20000.0}, request())
    assert faster.chosen is not None and faster.chosen.profile == "gpu"


def test_cost_per_row_is_the_hourly_price_over_the_rows_per_hour_plus_each_workers_start() -> None:
    placement = place([CPU], {"cpu": 1000.0}, request(rows=3_600_000, workers=2))
    option = placement.options[0]
    hourly = 0.10 + 30 / 1000 * 0.15
    expected = (3600.0 + 2 * batch_placement.STARTUP_SECONDS) * hourly / 3600.0 / 3_600_000 * 1e6
    assert option.cost_per_million_rows == pytest.approx(expected)
    assert option.seconds == pytest.approx(1800.0 + batch_placement.STARTUP_SECONDS)


def test_a_deadline_takes_the_fewest_workers_that_meet_it_and_rejects_what_cannot() -> None:
    # 1M rows at 1000 rows/s: 1000 s on one worker; 400 s needs 3 workers (333 s + start).
    placement = place([CPU], {"cpu": 1000.0}, request(deadline_s=400.0))
    assert placement.chosen is not None and placement.chosen.workers == 3
    assert placement.chosen.seconds is not None and placement.chosen.seconds <= 400.0
    too_tight = place([CPU], {"cpu": 1000.0}, request(deadline_s=100.0))
    assert too_tight.chosen is None
    assert "maxWorkers is 4" in too_tight.options[0].rejection and "workers" in too_tight.reason
    # The faster, dearer profile meets the deadline the cheap one cannot: it wins.
    both = place([CPU, GPU], {"cpu": 1000.0, "gpu": 20000.0}, request(deadline_s=100.0))
    assert both.chosen is not None and both.chosen.profile == "gpu"


def test_an_unmeasured_profile_is_rejected_saying_what_to_do() -> None:
    placement = place([CPU, GPU], {"cpu": 1000.0}, request())
    assert placement.chosen is not None and placement.chosen.profile == "cpu"
    assert not placement.options[1].feasible and "hardwareProfiles" in placement.options[1].rejection
    # Nothing measured at all: the compression report's throughput stands in for the first profile.
    estimated = place([CPU, GPU], {}, request(), report_throughput=800.0)
    assert estimated.chosen is not None and estimated.chosen.estimated and estimated.chosen.profile == "cpu"
    assert "compression report" in estimated.reason
    assert place([CPU], {}, request()).chosen is None


def test_without_a_row_count_it_prices_per_row_and_uses_one_worker() -> None:
    placement = place([CPU], {"cpu": 1000.0}, request(rows=None, deadline_s=10.0))
    assert placement.chosen is not None and placement.chosen.workers == 1 and placement.chosen.seconds is None
