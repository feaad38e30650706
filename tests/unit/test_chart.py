"""The Helm chart's values are documented and schema-checked; its dashboard queries frugal's metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

CHART = Path(__file__).resolve().parents[2] / "charts" / "frugal"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_default_values_satisfy_the_schema() -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


@pytest.mark.parametrize(
    "values",
    [
        {"operator": {"replica": 2}},
        {"serviceMonitor": {"enable": True}},
        {"imag": {}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"alerts": {"enable": True}},
        {"alerts": {"labels": {"release": 1}}},
        {"crds": {"installed": True}},
        {"crds": {"install": "yes"}},
        {"networkPolicy": {"enable": True}},
        {"networkPolicy": {"metricsFrom": []}},
        {"operator": {"resources": {"request": {"cpu": "100m"}}}},
        {"operator": {"resources": {"limits": {"cpu": "a lot"}}}},
        {"operator": {"resources": {"requests": {"memroy": "1Gi"}}}},
    ],
)
def test_a_typo_or_bad_value_fails_the_schema(values: dict[str, Any]) -> None:
    merged = {**VALUES, **{key: {**VALUES.get(key, {}), **value} for key, value in values.items()}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(merged)


def test_operator_resources_take_kubernetes_quantities() -> None:
    resources = {"requests": {"cpu": 0.5, "memory": "1.5Gi", "ephemeral-storage": "64M", "example.com/fpga": 1},
                 "limits": {"cpu": "500m", "hugepages-2Mi": "128Mi"}}  # fmt: skip
    operator = {**VALUES["operator"], "resources": resources}
    jsonschema.Draft7Validator(SCHEMA).validate({**VALUES, "operator": operator})


def test_every_value_is_documented_by_a_comment() -> None:
    """Each leaf value sits under a comment block whose first line starts with `# --` (helm-docs)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    leaves = [i for i, line in enumerate(lines) if re.match(r"\s*[A-Za-z]+: \S", line)]
    assert len(leaves) > 20
    undocumented = [lines[i] for i in leaves if not _comment_block(lines, i).startswith("# --")]
    assert undocumented == []


def _comment_block(lines: list[str], leaf: int) -> str:
    start = leaf
    while start > 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    return lines[start].strip() if start < leaf else ""


def test_the_committed_dashboard_is_what_its_definition_builds() -> None:
    done = subprocess.run(
        [sys.executable, str(CHART.parents[1] / "scripts" / "dashboard.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_front_stage_series_count_each_request_once() -> None:
    """Request rate, errors and latency read shard "0" only; a sharded model's later stages see every
    request again. Energy and power add up every stage."""
    dashboard = json.loads((CHART / "dashboards" / "frugal.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name, selector in re.findall(r"\b(frugal_[a-z0-9_]+)\{([^}]*)\}", target["expr"]):
                front_only = name.startswith(
                    ("frugal_requests_total", "frugal_requests_over_latency_target", "frugal_request_duration_seconds")
                )
                assert ('shard="0"' in selector) == front_only or name == "frugal_model_size_bytes", (
                    panel["title"], name, selector
                )


def test_the_dashboard_queries_only_frugal_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "frugal.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Latency vs SLO", "Requests per second by code", "Error ratio (5xx)", "Replicas per shard",
        "Autoscaler reason", "Queue depth and batch size", "Power", "Energy per request", "Cost per hour",
        "Cost per 1k requests", "Served variant and hardware", "Compression report", "Latency SLO burn rate",
    } <= titles  # fmt: skip
    for expression in expressions:
        names = set(re.findall(r"\b([a-z][a-z0-9_]*)\{", expression)) - {"by"}
        assert names and all(name.startswith("frugal_") for name in names), expression


def test_the_dashboard_queries_only_metrics_that_frugal_exports() -> None:
    """Every series the dashboard reads is exported by the serving pods or by the operator."""
    dashboard = json.loads((CHART / "dashboards" / "frugal.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    assert list(variables) == ["namespace", "model"]
    queries += variables.values()
    queried = {name for query in queries for name in re.findall(r"\b(frugal_[a-z0-9_]+)", query)}
    exported = _sample_names(_serving_registry()) | _sample_names(_operator_registry())
    assert queried and queried <= exported, queried - exported


def test_every_series_the_alert_rules_read_is_one_frugal_exports() -> None:
    exported = _sample_names(_serving_registry()) | _sample_names(_operator_registry())
    for group in yaml.safe_load((CHART / "alerts" / "frugal-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            named = set(re.findall(r"\bfrugal_[a-z0-9_]+", rule["expr"]))
            assert named and named <= exported, (rule["alert"], sorted(named - exported))


def test_every_label_the_dashboard_filters_or_groups_by_is_on_the_series() -> None:
    dashboard = json.loads((CHART / "dashboards" / "frugal.json").read_text())
    labels = _labels_by_sample(_serving_registry()) | _labels_by_sample(_operator_registry())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            grouped = {g.strip() for by in re.findall(r"by \(([^)]*)\)", query) for g in by.split(",")}
            for name, selector in re.findall(r"\b(frugal_[a-z0-9_]+)\{([^}]*)\}", query):
                used = grouped | set(re.findall(r"([a-z_]+)=~?", selector))
                assert used - {"le"} <= labels[name], (panel["title"], name, used - labels[name])


def _serving_registry() -> CollectorRegistry:
    from frugal.serving.server.metrics import MetricLabels, ServerMetrics

    registry = CollectorRegistry()
    labels = MetricLabels(model="digits", variant="fp32", namespace="ml")
    metrics = ServerMetrics(registry, labels, latency_target_s=0.05)
    metrics.count(200)
    metrics.power("estimate", 30.0, 1.0)
    return registry


def _operator_registry() -> CollectorRegistry:
    from frugal.operator.api.spec import parse_model_deployment
    from frugal.operator.decision.conditions import Phase
    from frugal.operator.decision.planner import Option
    from frugal.operator.telemetry import OperatorMetrics

    metrics = OperatorMetrics()
    md = parse_model_deployment(
        {
            "metadata": {"name": "digits", "namespace": "ml"},
            "spec": {
                "model": {"uri": "zoo://digits-mlp"},
                "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 50}},
            },
        }
    )
    variants = [{"name": "fp32", "sizeBytes": 1000, "accepted": True,
                 "metric": {"name": "accuracy", "value": 0.97, "drop": 0.0}}]  # fmt: skip
    metrics.observe(md, Option("fp32", "cpu", 1), {"shards": [{"index": 0, "replicas": 2}], "variants": variants})
    metrics.autoscaled(("ml", "digits", "digits"), [2], "Steady", 0.5, 30.0, power_capped=False)
    metrics.assessed("ml", "digits", Phase.SERVING, {})
    return metrics.registry


def _sample_names(registry: CollectorRegistry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def _labels_by_sample(registry: CollectorRegistry) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found
