"""Where a batch runs (pure): the hardware profile and worker count with the lowest cost per row.

Latency does not matter to a batch, so every row may go to whatever hardware scores it cheapest. One
worker of a profile scores ``T`` rows per second (the throughput profiling measured for the variant
on that profile: one serving replica's, at the serving batch size) and, busy all the time, costs ``H``
per hour: its node share plus its energy at full load (``costPerHour + maxWatts/1000 × pricePerKWh``,
the planner's pricing with utilisation 1). Then, for ``N`` rows on ``w`` workers that each take
``s`` seconds to start (load and verify the model)::

    seconds        = N / (w · T) + s
    cost           = (N / T + w · s) · H / 3600
    cost per row   = cost / N

so more workers finish sooner for almost the same money (each start is paid once more). Without a
deadline the fewest workers win (``workers``, else 1); with ``deadlineSeconds`` the fewest that finish
in time, up to ``maxWorkers``; an option that cannot is rejected, with the count it would need. The
cheapest feasible option wins; within the planner's 10% tolerance, the faster one (an estimate that
close is noise, and finishing sooner frees the hardware). A profile with no throughput measured is
rejected (say which to profile) unless no profile has one, in which case the compression report's
throughput stands in for the first profile, as the serving planner does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from frugal.operator.decision import planner

SECONDS_PER_HOUR = 3600.0
# Starting a worker: a process or pod start, the model load and its verification.
STARTUP_SECONDS = 5.0
COST_TOLERANCE = 0.10


@dataclass(frozen=True)
class Request:
    """What the BatchInference asks: the rows (None when unknown), its worker bounds and deadline."""

    rows: int | None
    workers: int | None
    max_workers: int
    deadline_s: float | None
    price_per_kwh: float


@dataclass(frozen=True)
class Option:
    """One candidate profile for the batch, priced or rejected."""

    profile: str
    rows_per_second: float | None
    workers: int
    seconds: float | None
    cost_per_million_rows: float | None
    rejection: str = ""
    estimated: bool = False

    @property
    def feasible(self) -> bool:
        return not self.rejection and self.cost_per_million_rows is not None


@dataclass(frozen=True)
class Placement:
    chosen: Option | None
    options: tuple[Option, ...]
    reason: str


def hourly_cost(profile: planner.Profile, price_per_kwh: float) -> float:
    """USD per hour of one worker busy all the time: node share plus energy at full load."""
    return profile.cost_per_hour + profile.max_watts / 1000.0 * price_per_kwh


def place(
    profiles: Sequence[planner.Profile],
    throughput: Mapping[str, float],
    request: Request,
    report_throughput: float | None = None,
) -> Placement:
    """The cheapest (profile, workers) for `request`; `throughput`: one worker's rows/s per profile."""
    measured = {name: rate for name, rate in throughput.items() if rate > 0}
    options = []
    for index, profile in enumerate(profiles):
        rate = measured.get(profile.name)
        estimated = False
        if rate is None and not measured and index == 0 and report_throughput:
            rate, estimated = report_throughput, True
        options.append(_option(profile, rate, request, estimated))
    feasible = [o for o in options if o.feasible]
    if not feasible:
        why = "; ".join(f"{o.profile}: {o.rejection}" for o in options)
        return Placement(None, tuple(options), f"no candidate profile can run the batch: {why}")
    cheapest = min(o.cost_per_million_rows or 0.0 for o in feasible)
    close = [o for o in feasible if (o.cost_per_million_rows or 0.0) <= cheapest * (1 + COST_TOLERANCE)]
    chosen = min(close, key=lambda o: (o.seconds or 0.0, o.cost_per_million_rows or 0.0, o.profile))
    return Placement(chosen, tuple(options), _reason(chosen, options, request))


def _option(profile: planner.Profile, rate: float | None, request: Request, estimated: bool) -> Option:
    if rate is None:
        return Option(
            profile.name,
            None,
            0,
            None,
            None,
            f"no throughput measured for it: add {profile.name} to the ModelDeployment's "
            "hardwareProfiles so profiling measures it",
        )
    workers, rejection = _workers(rate, request)
    hourly = hourly_cost(profile, request.price_per_kwh)
    rows = request.rows
    if rows:
        seconds = rows / (workers * rate) + STARTUP_SECONDS
        per_row = (rows / rate + workers * STARTUP_SECONDS) * hourly / SECONDS_PER_HOUR / rows
    else:
        seconds, per_row = None, hourly / SECONDS_PER_HOUR / rate
    return Option(profile.name, rate, workers, seconds, per_row * 1e6, rejection, estimated)


def _workers(rate: float, request: Request) -> tuple[int, str]:
    """The worker count, and why the deadline cannot be met with it (empty when it can)."""
    if request.workers is not None:
        workers = request.workers
    elif request.deadline_s is None or not request.rows:
        workers = 1
    else:
        scoring = request.deadline_s - STARTUP_SECONDS
        needed = math.inf if scoring <= 0 else math.ceil(request.rows / (rate * scoring) - 1e-9)
        workers = int(min(max(1, needed), request.max_workers))
        if needed > request.max_workers:
            return workers, (
                f"{request.rows} rows in {request.deadline_s:g} s need "
                f"{'more than any number of' if needed == math.inf else int(needed)} workers at "
                f"{rate:.4g} rows/s each; maxWorkers is {request.max_workers}"
            )
    if request.deadline_s is not None and request.rows:
        seconds = request.rows / (workers * rate) + STARTUP_SECONDS
        if seconds > request.deadline_s:
            return (
                workers,
                f"{workers} worker(s) take {seconds:.0f} s, over the {request.deadline_s:g} s deadline",
            )
    return workers, ""


def _reason(chosen: Option, options: Sequence[Option], request: Request) -> str:
    cost = f"${chosen.cost_per_million_rows:.4g} per million rows"
    speed = f"{chosen.workers} worker(s) at {chosen.rows_per_second:.4g} rows/s each"
    when = "" if chosen.seconds is None else f", about {chosen.seconds:.0f} s"
    note = " (throughput from the compression report: nothing was profiled)" if chosen.estimated else ""
    others = [
        f"{o.profile} ${o.cost_per_million_rows:.4g}" if o.feasible else f"{o.profile}: {o.rejection}"
        for o in options
        if o is not chosen
    ]
    rest = f"; others: {'; '.join(others)}" if others else ""
    deadline = "" if request.deadline_s is None else f" within {request.deadline_s:g} s"
    return f"{chosen.profile}: {cost}{deadline}, {speed}{when}{note}{rest}"
