"""The chart's dashboard and alert rules against a real Prometheus scraping `frugal up`: a whole model
and a sharded one, each run with ``--prometheus-targets`` (its replicas and its operator series as a
``file_sd`` file), under a counted load from this test's clients.

Every dashboard query must return data, with "All" and with each model picked; the request rate of
the sharded model, read from its front stage as the dashboard reads it, must equal the clients' count
within 5% (its later stage also counts every batch the front forwards to it);
energy per request sums every stage; every alert rule's expression is accepted, finds the series it
names, and the health alerts stay quiet. A typo in a metric name of either fails here: the same
checks, given a copy of the dashboard or of the rules with one metric name misspelled, raise.

`FRUGAL_DASHBOARD_PNG=docs/dashboard.png` makes the test write the README's picture of the dashboard:
its panels' queries over this run, plotted.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_queries import (
    alert_rules,
    check_alert_rules_live,
    check_dashboard_live,
    dashboard,
    panel_queries,
    render_dashboard_png,
)
from prometheus_harness import Prometheus, PrometheusError

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_S = 0.25  # with 5 s of quiet on both sides of the load, rate's extrapolation stays within 2%
QUIET_S = 5.0
REQUESTS_PER_MODEL = 6000  # about 15 s here; the load ends on the count, not on a clock
CLIENTS = 3
REQUEST = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [' + b", ".join(
    [b"0.5"] * 64
) + b"]}]}"
RUNS = {"whole": "digits.yaml", "sharded": "digits-sharded.yaml"}


@dataclass
class Run:
    """One `frugal up` serving until interrupted, in namespace `namespace`."""

    name: str
    namespace: str
    process: subprocess.Popen[bytes]
    log: Path
    endpoint: str = ""
    model: str = ""
    variant: str = ""  # what the planner chose (its "chose ... on ..." line)
    answered: int = 0
    failed: list[str] = field(default_factory=list)

    def wait_serving(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            served = re.search(r"serving (\S+) at (http://\S+)/v2/models/\S+", text)
            chose = re.search(r"chose (\S+) on \S+", text)
            if served and chose and "serving until Ctrl-C" in text:
                self.model, self.endpoint, self.variant = served.group(1), served.group(2), chose.group(1)
                return
            assert self.process.poll() is None, f"frugal up ({self.name}) exited:\n{text[-4000:]}"
            time.sleep(0.5)
        raise AssertionError(f"frugal up ({self.name}) not serving after {timeout:.0f} s:\n{text[-4000:]}")


def manifest(example: str, namespace: str, directory: Path) -> Path:
    """The example in its own namespace, held at one replica per shard (the autoscaler still ticks and
    reports; a replica added mid-load would be scraped only after Prometheus' discovery delay)."""
    documents = list(yaml.safe_load_all((ROOT / "examples" / example).read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["namespace"] = namespace
    md["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 1}
    path = directory / f"{namespace}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, dict[str, Run]]]:
    work = tmp_path_factory.mktemp("up-dashboard")
    targets = work / "targets"
    prometheus = Prometheus(work / "prometheus", interval_s=SCRAPE_S, target_files=[str(targets / "*.json")])
    runs: dict[str, Run] = {}
    try:
        prometheus.start()
        for name, example in RUNS.items():
            namespace = f"dashboard-{name}"
            log = work / f"{name}.log"
            with log.open("wb") as sink:
                command = [sys.executable, "-m", "frugal.operator.main", "up", str(manifest(example, namespace, work)),
                           "--workdir", str(work / name), "--prometheus-targets", str(targets / f"{name}.json"),
                           "--scale-interval", "1"]  # fmt: skip
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                )
            runs[name] = Run(name, namespace, process, log)
        for run in runs.values():
            run.wait_serving()
        yield prometheus, runs
    finally:
        for run in runs.values():
            run.process.send_signal(signal.SIGINT)
        for run in runs.values():
            try:
                run.process.wait(60)
            except subprocess.TimeoutExpired:
                run.process.kill()
        prometheus.stop()


def every_target_scraped_after(prometheus: Prometheus, moment: float, targets: int) -> None:
    """Wait until each of `targets` scrape targets has a successful scrape newer than `moment` (unix time)."""

    def fresh(found: list[Any]) -> bool:
        stamps = [float(s["value"][1]) for s in found]
        return len(stamps) >= targets and min(stamps) > moment

    prometheus.wait_for_series("timestamp(up == 1)", predicate=fresh)


@dataclass
class Tally:
    """What the clients of each run got, by run name."""

    answered: Counter[str] = field(default_factory=Counter)
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(run: Run, tally: Tally) -> None:
    """Back-to-back requests until the run's clients together have REQUESTS_PER_MODEL answers."""
    url = f"{run.endpoint}/v2/models/{run.model}/infer"
    while tally.answered[run.name] < REQUESTS_PER_MODEL and len(tally.failed[run.name]) < 50:
        request = urllib.request.Request(url, REQUEST, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            with tally.lock:
                tally.answered[run.name] += 1
        except OSError as error:
            with tally.lock:
                tally.failed[run.name].append(repr(error))


@pytest.fixture(scope="module")
def loaded(watched: tuple[Prometheus, dict[str, Run]]) -> dict[str, Any]:
    """A counted load on both models at once, framed by QUIET_S of no load on either side, every
    target scraped before it starts and after it ends."""
    prometheus, runs = watched
    targets = 2 + 1 + 2  # each run's operator series, the whole model's replica, the sharded model's two
    every_target_scraped_after(prometheus, time.time(), targets)
    quiet_from = time.time()
    every_target_scraped_after(prometheus, quiet_from + QUIET_S, targets)
    tally = Tally()
    threads = [threading.Thread(target=client, args=(run, tally), daemon=True)
               for run in runs.values() for _ in range(CLIENTS)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not any(thread.is_alive() for thread in threads), f"the load did not finish: {tally.answered}"
    quiet_until = time.time() + QUIET_S
    every_target_scraped_after(prometheus, quiet_until, targets)
    for run in runs.values():
        run.answered, run.failed = tally.answered[run.name], tally.failed[run.name]
    return {"from": quiet_from, "until": quiet_until, "window_s": quiet_until - quiet_from}


def duration(seconds: float) -> str:
    """Seconds as a PromQL duration (Prometheus 2 takes no fractions: milliseconds)."""
    return f"{round(seconds * 1000)}ms"


def dashboard_value(prometheus: Prometheus, title: str, run: Run, window_s: float, at: float) -> float:
    """The sum of the answer of panel `title` with the variables set to `run`'s model and the rate
    interval set to `window_s`, at `at`."""
    [expr] = [e for t, e in panel_queries(run.namespace, run.model, duration(window_s)) if t == title]
    return sum(float(s["value"][1]) for s in prometheus.query(expr, at=at))


def test_every_request_was_answered(watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any]) -> None:
    _, runs = watched
    for run in runs.values():
        assert run.failed == [] and run.answered > 100, (run.name, run.answered, run.failed[:3])


@pytest.mark.parametrize("name", list(RUNS))
def test_the_dashboard_request_rate_is_the_clients_count(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any], name: str
) -> None:
    prometheus, runs = watched
    run, window, at = runs[name], loaded["window_s"], loaded["until"]
    counted = dashboard_value(prometheus, "Requests per second by code", run, window, at) * window
    assert counted == pytest.approx(run.answered, rel=0.05), (counted, run.answered)
    every_stage = prometheus.query(
        f'sum(increase(frugal_requests_total{{namespace="{run.namespace}"}}[{duration(window)}]))', at=at
    )
    # What reading every stage would count: the later stage counts each batch the front forwards.
    if name == "sharded":
        assert float(every_stage[0]["value"][1]) > 1.2 * run.answered
    else:
        assert float(every_stage[0]["value"][1]) == pytest.approx(run.answered, rel=0.05)


def test_energy_per_request_counts_every_stage(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any]
) -> None:
    prometheus, runs = watched
    run, window, at = runs["sharded"], loaded["window_s"], loaded["until"]
    per_request = dashboard_value(prometheus, "Energy per request", run, window, at)
    by_stage = prometheus.query(
        f'sum by (shard) (increase(frugal_energy_joules_total{{namespace="{run.namespace}"}}[{duration(window)}]))',
        at=at,
    )
    joules = {s["metric"]["shard"]: float(s["value"][1]) for s in by_stage}
    assert set(joules) == {"0", "1"} and all(j > 0 for j in joules.values()), joules
    assert per_request == pytest.approx(sum(joules.values()) / run.answered, rel=0.05)


def test_every_dashboard_query_returns_data_for_each_model(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any]
) -> None:
    prometheus, runs = watched
    answers = check_dashboard_live(prometheus, [(r.namespace, r.model) for r in runs.values()])
    served = answers["Served variant and hardware"]
    # the variant each run's planner chose (digits' variants measure alike through servers, where the
    # server's own cost dominates, so which one wins is the measurement's to say, not this test's)
    assert {(s["metric"]["namespace"], s["metric"]["variant"]) for s in served} == {
        (r.namespace, r.variant) for r in runs.values()
    }
    assert all(r.variant in {"fp32", "int8-dynamic"} for r in runs.values())
    shards = {(s["metric"]["namespace"], s["metric"]["shard"]) for s in answers["Replicas per shard"]}
    assert shards == {("dashboard-whole", "0"), ("dashboard-sharded", "0"), ("dashboard-sharded", "1")}
    report = {(s["metric"]["namespace"], s["metric"]["variant"]) for s in answers["Compression report"]}
    assert {v for n, v in report if n == "dashboard-whole"} >= {"fp32", "int8-dynamic"}


def test_every_alert_rule_runs_and_a_healthy_run_fires_none(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any]
) -> None:
    prometheus, _ = watched
    check_alert_rules_live(prometheus, "dashboard-.*", models=2)


def misspelled(expr: str, text: str) -> str:
    """`expr` with its one occurrence of `text` (which starts with a metric name) misspelled:
    frugal_requests_... becomes frugal_reqests_..."""
    assert expr.count(text) == 1 and text.startswith("frugal_request"), (text, expr)
    return expr.replace(text, text.replace("frugal_request", "frugal_reqest", 1))


# (panel title, text misspelled in its query): a plain query, and the 5xx selector of the error ratio,
# whose `or 0 * ...` fallback would still answer (0) with that name misspelled.
DASHBOARD_TYPOS = [
    ("Requests per second by code", "frugal_requests_total{"),
    ("Error ratio (5xx)", 'frugal_requests_total{namespace=~"$namespace", model=~"$model", shard="0", code=~"5.."}'),
]


@pytest.mark.parametrize(("title", "text"), DASHBOARD_TYPOS)
def test_a_misspelled_metric_in_a_dashboard_query_fails_the_live_check(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any], title: str, text: str
) -> None:
    prometheus, _ = watched
    board = copy.deepcopy(dashboard())
    [panel] = [p for p in board["panels"] if p["title"] == title]
    panel["targets"][0]["expr"] = misspelled(panel["targets"][0]["expr"], text)
    with pytest.raises(PrometheusError, match="frugal_reqests_total"):
        check_dashboard_live(prometheus, board=board)


def test_a_misspelled_metric_in_an_alert_rule_fails_the_live_check(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any]
) -> None:
    prometheus, _ = watched
    rules = copy.deepcopy(alert_rules())
    [rule] = [r for r in rules if r["alert"] == "FrugalLatencySLOFastBurn"]
    text = 'frugal_requests_over_latency_target_total{shard="0"}[5m]'  # the short window's numerator
    rule["expr"] = misspelled(rule["expr"], text)
    with pytest.raises(PrometheusError, match="frugal_reqests_over_latency_target_total"):
        check_alert_rules_live(prometheus, "dashboard-.*", models=2, rules=rules)


def test_the_dashboard_renders_from_this_run(
    watched: tuple[Prometheus, dict[str, Run]], loaded: dict[str, Any], tmp_path: Path
) -> None:
    prometheus, _ = watched
    path = Path(os.environ.get("FRUGAL_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    plotted = render_dashboard_png(prometheus, loaded["from"] - 30, loaded["until"], path)
    assert path.stat().st_size > 10_000
    assert all(plotted.values()), plotted
