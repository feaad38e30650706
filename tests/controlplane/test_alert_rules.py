"""frugal's alert rules (charts/frugal/alerts): checked and unit-tested by the real promtool and shipped
unchanged by the chart's PrometheusRule (tests/unit/test_chart.py checks the series they name)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from controlplane_harness import CHART_DIR, ControlPlane
from prometheus_harness import ensure_promtool

RULES = CHART_DIR / "alerts" / "frugal-rules.yaml"
RULE_TESTS = CHART_DIR / "alerts" / "frugal-rules.test.yaml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure_promtool()), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_hold_every_alert() -> None:
    done = promtool("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    exercised = [a for t in tests for a in t["alert_rule_test"]]
    for alert in rules:  # each alert is tested both not firing and firing
        outcomes = {bool(a["exp_alerts"]) for a in exercised if a["alertname"] == alert}
        assert outcomes == {False, True}, (alert, outcomes)


def test_the_chart_ships_the_rules_unchanged(cluster: ControlPlane) -> None:
    out = cluster.helm(
        "template", "frugal", CHART_DIR, "--set", "alerts.enabled=true", "--set", "alerts.labels.release=kps",
        "--show-only", "templates/prometheusrule.yaml",
    ).stdout  # fmt: skip
    [rule] = [d for d in yaml.safe_load_all(out) if d]
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    off = cluster.helm("template", "frugal", CHART_DIR).stdout
    assert "PrometheusRule" not in off  # off by default: it needs the Prometheus Operator's CRDs
