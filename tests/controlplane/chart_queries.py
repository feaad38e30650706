"""The chart's Grafana dashboard and alert rules, run against a real Prometheus.

Shared by the control-plane tier (the operator in a cluster, `test_autoscaling`) and the system tier
(`frugal up --prometheus-targets`, `test_up_dashboard`): both scrape real `frugal serve` processes
and the operator's series, and every expression must be accepted and find what it names. The
checks take the dashboard and the rules as arguments (the chart's by default), so a test can show that
a misspelled copy fails them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_harness import Prometheus, Series

CHART = Path(__file__).resolve().parents[2] / "charts" / "frugal"
RULES = CHART / "alerts" / "frugal-rules.yaml"
DASHBOARD = CHART / "dashboards" / "frugal.json"
METRIC = re.compile(r"\bfrugal_[a-z0-9_]+")

Model = tuple[str, str]  # (namespace, model): the labels every panel groups by


@functools.cache
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(
    namespace: str = ".*", model: str = ".*", rate_interval: str = "1m", board: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Every panel of `board` (the chart's dashboard by default) that queries (rows left out), its
    targets' `expr` set as Grafana would set the variables (`namespace` and `model` are regular
    expressions: ".*" is "All")."""
    for panel in (board or dashboard())["panels"]:
        if not panel.get("targets"):
            continue
        targets = [
            {
                **target,
                "expr": target["expr"]
                .replace("$namespace", namespace)
                .replace("$model", model)
                .replace("$__rate_interval", rate_interval),
            }
            for target in panel["targets"]
        ]
        yield {**panel, "targets": targets}


def panel_queries(
    namespace: str = ".*", model: str = ".*", rate_interval: str = "1m", board: dict[str, Any] | None = None
) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard (see :func:`panels`)."""
    for panel in panels(namespace, model, rate_interval, board):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def wait_for_every_metric(prometheus: Prometheus, expressions: Iterable[str]) -> None:
    """Each frugal metric the expressions name has a series: a misspelled name fails here even where
    its query would still answer (a `... or 0 * ...` fallback, an `unless`, an `absent`)."""
    for name in sorted({n for expr in expressions for n in METRIC.findall(expr)}):
        prometheus.wait_for_series(f"count({name})")


def check_alert_rules_live(
    prometheus: Prometheus, namespace: str, models: int = 1, rules: list[dict[str, Any]] | None = None
) -> None:
    """Every expression of the chart's alert rules, run against this Prometheus scraping real servers
    and the operator: accepted, every series it names present, and nothing firing on a healthy model
    (the joins between serving and operator series match, or FrugalServedModelMetricsMissing would).
    The operator watches every namespace, so ModelDeployments other tests left failing may fire: only
    `namespace`'s (a regular expression) and the operator's own alerts count. `models` is how many
    served models the serving p95 and the latency-SLO burn rate must be found for. `rules`: the chart's
    alert rules by default."""
    rules = alert_rules() if rules is None else rules
    wait_for_every_metric(prometheus, (r["expr"] for r in rules))
    joined = prometheus.wait_for_series(
        'histogram_quantile(0.95, sum by (namespace, model, le) (rate(frugal_request_duration_seconds_bucket'
        f'{{shard="0", namespace=~"{namespace}"}}[1m]))) and on (namespace, model) frugal_slo_latency_p95_seconds',
        predicate=lambda found: len(found) >= models,
    )
    assert len(joined) == models, joined  # the serving p95 meets the operator's SLO series label for label
    burning = prometheus.wait_for_series(
        'sum by (namespace, model) (rate(frugal_requests_over_latency_target_total{shard="0", namespace=~"'
        f'{namespace}"}}[1m])) / sum by (namespace, model) (rate(frugal_requests_total{{shard="0"}}[1m]))',
        predicate=lambda found: len(found) >= models,
    )
    assert len(burning) == models, burning  # every served model counts its requests over the target
    ours = re.compile(namespace)
    for rule in rules:
        healthy = ("FrugalServedModelMetricsMissing", "FrugalOperatorDown", "FrugalServerErrors",
                   "FrugalCompressionJobFailed", "FrugalModelDeploymentNotServing")  # fmt: skip
        found = prometheus.query(rule["expr"])
        if rule["alert"] in healthy:
            firing = [r for r in found if ours.fullmatch(r["metric"].get("namespace", namespace))]
            assert firing == [], (rule["alert"], firing)
        # latency and the power cap depend on this load and this machine: accepted is enough


def check_dashboard_live(
    prometheus: Prometheus, models: Collection[Model] = (), board: dict[str, Any] | None = None
) -> dict[str, list[Series]]:
    """Every query of `board` (the chart's Grafana dashboard by default) returns data from this
    Prometheus and every metric it names has a series: with its variables at "All", and, for each of
    `models`, with the variables set to that model (each answer then holds that model's series and no
    other's). Returns the "All" answers by panel title."""
    board = board or dashboard()
    for variable in (v for v in board["templating"]["list"] if v["type"] == "query"):
        series = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"])
        assert series, variable["query"]
        selector = series.group(1).replace("$namespace", ".*")
        assert prometheus.query(f"count by ({series.group(2)}) ({selector})"), variable["query"]
    wait_for_every_metric(prometheus, (expr for _, expr in panel_queries(board=board)))
    answers: dict[str, list[Series]] = {}
    for title, expr in panel_queries(board=board):
        answers.setdefault(title, []).extend(prometheus.wait_for_series(expr))
    for namespace, model in models:
        assert re.fullmatch(r"[a-z0-9.-]+", namespace + model), (namespace, model)  # no regex to escape
        for title, expr in panel_queries(namespace, model, board=board):
            found = prometheus.wait_for_series(expr)
            labels = {(s["metric"].get("namespace"), s["metric"].get("model")) for s in found}
            assert labels == {(namespace, model)}, (title, expr, labels)
    return answers


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' value of it."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def render_dashboard_png(prometheus: Prometheus, start: float, end: float, path: Path) -> dict[str, int]:
    """The dashboard as a picture: every panel's queries over [start, end] (unix time), variables at
    "All", in the dashboard's order — a time-series panel as lines named by its legendFormat, a
    table panel as a table of the values at `end`. Returns the series drawn per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(panels(rate_interval="5s"))
    columns = 3
    rows = -(-len(shown) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 3.4 * rows), squeeze=False)
    step = max(1.0, (end - start) / 240)
    drawn: dict[str, int] = {}
    for ax, panel in zip(axes.flat, shown, strict=False):
        title = panel["title"]
        ax.set_title(title, fontsize=10, loc="left")
        if panel["type"] == "table":
            drawn[title] = _table(ax, prometheus, panel["targets"], end)
            continue
        drawn[title] = 0
        for target in panel["targets"]:
            for series in prometheus.query_range(target["expr"], start, end, step):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                ax.plot(times, values, label=legend(target.get("legendFormat") or "", series["metric"]), linewidth=1.2)
                drawn[title] += 1
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel((unit or "").removeprefix("suffix:"), fontsize=8)  # Grafana's custom-suffix unit
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if drawn[title]:
            ax.legend(fontsize=6, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    figure.suptitle(dashboard()["title"], fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return drawn


def _table(ax: Any, prometheus: Prometheus, targets: list[dict[str, Any]], at: float) -> int:
    """A table panel: one row per label set, one column per query (named by the metric it reads)."""
    rows: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    columns = []
    for target in targets:
        column = re.findall(r"frugal_[a-z0-9_]+", target["expr"])[0].removeprefix("frugal_")
        columns.append(column)
        for series in prometheus.query(target["expr"], at=at):
            key = tuple(sorted((k, v) for k, v in series["metric"].items() if k not in ("__name__", "metric")))
            rows.setdefault(key, {})[column] = f"{float(series['value'][1]):.4g}"
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return 0
    names = [k for k, _ in next(iter(rows))]
    cells = [[v for _, v in key] + [values.get(c, "") for c in columns] for key, values in sorted(rows.items())]
    table = ax.table(cellText=cells, colLabels=names + columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    return len(rows)
