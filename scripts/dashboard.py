"""The frugal Grafana dashboard, defined once with Grafana's own SDK (grafana-foundation-sdk).

    .venv/bin/python scripts/dashboard.py           # write charts/frugal/dashboards/frugal.json
    .venv/bin/python scripts/dashboard.py --check   # exit 1 when the committed file is not what this builds

Serving series are counted once per request: request rate, errors and end-to-end latency come from
shard "0", the front stage (later stages of a sharded model count each batch forwarded to them as a
request of their own, and the front stage's duration spans the whole chain); power and energy are summed over every stage.
A ratio panel answers 0, not nothing, when its numerator has no series (a healthy model has no 5xx).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

TARGET = Path(__file__).resolve().parents[1] / "charts" / "frugal" / "dashboards" / "frugal.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECTED = 'namespace=~"$namespace", model=~"$model"'
FRONT = SELECTED + ', shard="0"'
BY = "namespace, model"
SERVER_ERRORS = ', code=~"5.."'
# The latency SLO is "p95 within the target": 5% of requests may be slower. Burn rates above these
# page and ticket (charts/frugal/alerts/frugal-rules.yaml, docs/operations.md).
ERROR_BUDGET = 0.05
BURN_PAGE, BURN_TICKET = 14.4, 6.0


def rate(name: str, selector: str = FRONT, by: str = BY) -> str:
    return f"sum by ({by}) (rate({name}{{{selector}}}[$__rate_interval]))"


def share(part: str, whole: str) -> str:
    """`part` / `whole`, both `sum by (BY)`, with 0 where `whole` has a series and `part` has none."""
    return f"({part} or 0 * {whole}) / {whole}"


def query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def graph(title: str, unit: str, description: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).description(description).datasource(DATASOURCE)
    for target in queries:
        panel = panel.with_target(target)
    return panel.height(8).span(12)


def latency(q: float) -> str:
    return f"histogram_quantile({q}, sum by ({BY}, le) (rate(frugal_request_duration_seconds_bucket{{{FRONT}}}[$__rate_interval])))"


def compression_report() -> table.Panel:
    """Every variant the compression Job built, one row each: size, metric, drop, accepted."""
    columns = {  # query ref -> (series, column title, unit)
        "A": ("frugal_variant_size_bytes", "Size", "bytes"),
        "B": ("frugal_variant_metric", "Metric", "percentunit"),
        "C": ("frugal_variant_metric_drop", "Drop", "percentunit"),
        "D": ("frugal_variant_accepted", "Accepted", "bool_yes_no"),
    }
    panel = (
        table.Panel()
        .title("Compression report")
        .description(
            "Each compressed variant: its size, its score on spec.accuracyBudget.metric, how far that falls "
            "below the original model, and whether it is within the budget and fast enough on some "
            "HardwareProfile (status.variants)."
        )
        .datasource(DATASOURCE)
    )
    # The same labels on every query, so that Grafana's merge joins the four into one row per variant
    # (the metric's name is left out: it is spec.accuracyBudget.metric, one per ModelDeployment).
    for ref, (series, _, _) in columns.items():
        expr = f"max by ({BY}, variant) ({series}{{{SELECTED}}})"
        panel = panel.with_target(query(expr, "", ref).instant().format(PromQueryFormat.TABLE))
    rename = {f"Value #{ref}": title for ref, (_, title, _) in columns.items()}
    panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={})).with_transformation(
        DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": rename})
    )
    for _, title, unit in columns.values():
        panel = panel.override_by_name(title, [DynamicConfigValue(id_val="unit", value=unit)])
    return panel.height(8).span(12)


def burn_rate(per_request: str) -> timeseries.Panel:
    """How fast the latency SLO's error budget goes: the share of front-stage requests slower than the
    target over the budget's 5%, with the alerts' thresholds as lines."""
    over = rate("frugal_requests_over_latency_target_total")
    steps = [Threshold(None, "green"), Threshold(BURN_TICKET, "orange"), Threshold(BURN_PAGE, "red")]
    return (
        graph(
            "Latency SLO burn rate",
            "suffix:×",
            "Share of front-stage requests slower than spec.serving.slo.latencyP95Ms, over the 5% the SLO "
            f"allows: 1 spends the error budget in the SLO period. Above {BURN_PAGE:g} over 1h and 5m pages, above {BURN_TICKET:g} "
            "over 6h and 30m files a ticket (docs/operations.md).",
            # no share(): a model without a latency target has no counter, and no burn rate to draw
            query(f"{over} / {per_request} / {ERROR_BUDGET}", "{{namespace}}/{{model}}", "A"),
        )
        .min(0)
        .thresholds(dashboard.ThresholdsConfig().steps(steps))
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
    )


def variable(name: str, label: str, definition: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def build() -> dashboard.Dashboard:
    per_request = f"{rate('frugal_requests_total')}"
    panels = [
        dashboard.Row("Service level"),
        graph(
            "Latency vs SLO",
            "s",
            "End-to-end latency at the front stage (p50, p95, p99) against spec.serving.slo.latencyP95Ms.",
            query(latency(0.5), "{{namespace}}/{{model}} p50", "A"),
            query(latency(0.95), "{{namespace}}/{{model}} p95", "B"),
            query(latency(0.99), "{{namespace}}/{{model}} p99", "C"),
            query(f"max by ({BY}) (frugal_slo_latency_p95_seconds{{{SELECTED}}})", "{{namespace}}/{{model}} SLO p95", "D"),
        ),
        graph(
            "Requests per second by code",
            "reqps",
            "Answers per second at the front stage, by HTTP status (gRPC answers count under the REST "
            "equivalent): each client request once, however many stages it crosses.",
            query(rate("frugal_requests_total", by=f"{BY}, code"), "{{namespace}}/{{model}} {{code}}", "A"),
        ),
        graph(
            "Error ratio (5xx)",
            "percentunit",
            "Share of front-stage answers that are 5xx (4xx are the clients' errors).",
            query(share(rate("frugal_requests_total", FRONT + SERVER_ERRORS), per_request), "{{namespace}}/{{model}}", "A"),
        ),
        burn_rate(per_request),
        dashboard.Row("Capacity"),
        graph(
            "Replicas per shard",
            "short",
            "Serving replicas the autoscaler wants, per shard.",
            query(f"max by ({BY}, shard) (frugal_replicas{{{SELECTED}}})", "{{namespace}}/{{model}} shard {{shard}}", "A"),
        ),
        graph(
            "Autoscaler reason",
            "short",
            "The reason of the autoscaler's last decision (1 while it holds).",
            query(f"max by ({BY}, reason) (frugal_autoscaler_reason{{{SELECTED}}})", "{{namespace}}/{{model}} {{reason}}", "A"),
        ),
        graph(
            "Queue depth and batch size",
            "short",
            "Requests waiting in each stage's batch queue, and the mean batch each stage ran.",
            query(f"sum by ({BY}, shard) (frugal_queue_depth{{{SELECTED}}})", "{{namespace}}/{{model}} queue, shard {{shard}}", "A"),
            query(
                f"{rate('frugal_batch_size_sum', SELECTED, f'{BY}, shard')} / "
                f"{rate('frugal_batch_size_count', SELECTED, f'{BY}, shard')}",
                "{{namespace}}/{{model}} batch, shard {{shard}}",
                "B",
            ),
        ),
        dashboard.Row("Cost and energy"),
        graph(
            "Power",
            "watt",
            "Power drawn by every stage's replicas together (measured by NVML or estimated).",
            query(f"sum by ({BY}) (frugal_power_watts{{{SELECTED}}})", "{{namespace}}/{{model}}", "A"),
        ),
        graph(
            "Energy per request",
            "joule",
            "Energy of every stage per front-stage request.",
            query(f"{rate('frugal_energy_joules_total', SELECTED)} / {per_request}", "{{namespace}}/{{model}}", "A"),
        ),
        graph(
            "Cost per hour",
            "currencyUSD",
            "Replicas' hourly price plus energy at spec.autoscaling.power.pricePerKWh.",
            query(f"max by ({BY}) (frugal_cost_per_hour_usd{{{SELECTED}}})", "{{namespace}}/{{model}}", "A"),
        ),
        graph(
            "Cost per 1k requests",
            "currencyUSD",
            "What the product is for: the hourly cost over the front stage's request rate.",
            query(f"max by ({BY}) (frugal_cost_per_hour_usd{{{SELECTED}}}) / 3.6 / {per_request}", "{{namespace}}/{{model}}", "A"),
        ),
        dashboard.Row("What runs"),
        table.Panel()
        .title("Served variant and hardware")
        .description("The variant and HardwareProfile each model's front stage serves, and the variant's size.")
        .datasource(DATASOURCE)
        .unit("bytes")
        .with_target(
            query(
                f"max by ({BY}, variant, hardware_profile) (frugal_model_size_bytes{{{FRONT}}})", "", "A"
            )
            .instant()
            .format(PromQueryFormat.TABLE)
        )
        .height(8)
        .span(12),
        compression_report(),
    ]
    board = (
        dashboard.Dashboard("frugal: cost-aware model serving")
        .uid("frugal-overview")
        .tags(["frugal"])
        .editable()
        .timezone("browser")
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(variable("namespace", "Namespace", "label_values(frugal_requests_total, namespace)"))
        .with_variable(
            variable("model", "Model", 'label_values(frugal_requests_total{namespace=~"$namespace"}, model)')
        )
    )
    for panel in panels:
        board = board.with_row(panel) if isinstance(panel, dashboard.Row) else board.with_panel(panel)
    return board


def rendered() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args()
    text = rendered()
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET} is not what scripts/dashboard.py builds: run it and commit the result", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
