"""The Helm chart's values are documented and schema-checked; its dashboard queries frugal's metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

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
    ],
)
def test_a_typo_or_bad_value_fails_the_schema(values: dict[str, Any]) -> None:
    merged = {**VALUES, **{key: {**VALUES.get(key, {}), **value} for key, value in values.items()}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(merged)


def test_every_value_is_documented_by_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    leaves = [i for i, line in enumerate(lines) if re.match(r"\s*[A-Za-z]+: \S", line)]
    assert len(leaves) > 20
    undocumented = [lines[i] for i in leaves if not lines[i - 1].strip().startswith("# --")]
    assert undocumented == []


def test_the_dashboard_queries_only_frugal_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "frugal.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Latency p95 vs SLO", "Requests per second", "Replicas", "Power", "Cost per hour"} <= titles
    for expression in expressions:
        names = set(re.findall(r"\b([a-z_]+)\{", expression)) - {"by"}
        assert names and all(name.startswith("frugal_") for name in names), expression
