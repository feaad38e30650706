"""The operator's own metrics: the series a Grafana user reads per served model, and their lifecycle."""

from __future__ import annotations

from typing import Any

from frugal.operator.api.spec import ModelDeploymentSpec, parse_model_deployment
from frugal.operator.decision.planner import Option
from frugal.operator.telemetry import OperatorMetrics

SELECTION = Option(variant="int8-dynamic", profile="cpu-small", shards=2)
SHARDS = [{"index": 0, "replicas": 3}, {"index": 1, "replicas": 2}]


def model_deployment(name: str, model: str | None = None, slo_ms: float = 50) -> ModelDeploymentSpec:
    spec: dict[str, Any] = {
        "model": {"uri": "zoo://digits-mlp", **({"name": model} if model else {})},
        "serving": {"hardwareProfiles": ["cpu-small"], "slo": {"latencyP95Ms": slo_ms}},
    }
    return parse_model_deployment(
        {"metadata": {"name": name, "namespace": "ml", "generation": 1}, "spec": spec}
    )


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: OperatorMetrics, name: str) -> list[dict[str, str]]:
    return [s.labels for family in metrics.registry.collect() for s in family.samples if s.name == name]


def autoscaled(metrics: OperatorMetrics, name: str, cost: float, reason: str = "Steady") -> None:
    metrics.autoscaled(("ml", "digits", name), [3, 2], reason, cost, 40.0, power_capped=False)


def test_the_slo_is_exported_in_seconds_beside_cost_and_replicas() -> None:
    metrics = OperatorMetrics()
    metrics.observe(model_deployment("digits", slo_ms=40), SELECTION, {"shards": SHARDS})
    autoscaled(metrics, "digits", 1.25)
    per_model = {"namespace": "ml", "model": "digits", "model_deployment": "digits"}
    assert value(metrics, "frugal_slo_latency_p95_seconds", **per_model) == 0.04
    assert value(metrics, "frugal_cost_per_hour_usd", **per_model) == 1.25
    shard = {**per_model, "variant": "int8-dynamic", "hardware_profile": "cpu-small"}
    assert value(metrics, "frugal_replicas", **shard, shard="0") == 3
    assert value(metrics, "frugal_replicas", **shard, shard="1") == 2


def test_model_is_the_served_name_the_serving_pods_export() -> None:
    metrics = OperatorMetrics()
    metrics.observe(model_deployment("digits-sharded", model="digits"), SELECTION, {"shards": SHARDS})
    assert {s["model"] for s in series(metrics, "frugal_replicas")} == {"digits"}
    assert series(metrics, "frugal_slo_latency_p95_seconds")[0]["model_deployment"] == "digits-sharded"
    assert series(metrics, "frugal_cost_per_hour_usd") == []  # no cost known yet: no series


def test_two_deployments_of_one_model_keep_their_own_series() -> None:
    metrics = OperatorMetrics()
    metrics.observe(model_deployment("digits", slo_ms=50), SELECTION, {"shards": SHARDS})
    autoscaled(metrics, "digits", 1.0)
    metrics.observe(model_deployment("digits-sharded", model="digits", slo_ms=80), SELECTION, {"shards": SHARDS})
    autoscaled(metrics, "digits-sharded", 2.0)
    metrics.forget("ml", "digits")
    assert [s["model_deployment"] for s in series(metrics, "frugal_slo_latency_p95_seconds")] == [
        "digits-sharded"
    ]
    assert value(metrics, "frugal_cost_per_hour_usd", namespace="ml", model="digits",
                 model_deployment="digits-sharded") == 2  # fmt: skip
    assert {s["model_deployment"] for s in series(metrics, "frugal_replicas")} == {"digits-sharded"}


def test_a_new_observation_replaces_shards_that_went_away_and_forget_clears_all() -> None:
    metrics = OperatorMetrics()
    md = model_deployment("digits")
    metrics.observe(md, SELECTION, {"shards": SHARDS})
    autoscaled(metrics, "digits", 1.0, reason="LatencyAboveSLO")
    autoscaled(metrics, "digits", 3.0, reason="Steady")
    assert [s["reason"] for s in series(metrics, "frugal_autoscaler_reason")] == ["Steady"]
    metrics.observe(md, Option("fp32", "gpu-t4", 1), {"shards": [{"index": 0, "replicas": 1}]})
    assert [(s["shard"], s["variant"]) for s in series(metrics, "frugal_replicas")] == [("0", "fp32")]
    metrics.forget("ml", "digits")
    metrics.forget("ml", "digits")  # twice is harmless (delete handler retried)
    for name in (
        "frugal_replicas",
        "frugal_cost_per_hour_usd",
        "frugal_slo_latency_p95_seconds",
        "frugal_autoscaler_desired_replicas",
        "frugal_autoscaler_reason",
        "frugal_autoscaler_power_watts",
    ):
        assert series(metrics, name) == [], name


def test_the_autoscaler_exports_desired_replicas_reason_watts_and_the_cap() -> None:
    metrics = OperatorMetrics()
    metrics.autoscaled(("ml", "digits", "digits"), [4, 1], "PowerCapped", 0.9, 120.0, power_capped=True)
    per_model = {"namespace": "ml", "model": "digits", "model_deployment": "digits"}
    assert value(metrics, "frugal_autoscaler_desired_replicas", **per_model, shard="0") == 4
    assert value(metrics, "frugal_autoscaler_desired_replicas", **per_model, shard="1") == 1
    assert value(metrics, "frugal_autoscaler_reason", **per_model, reason="PowerCapped") == 1
    assert value(metrics, "frugal_autoscaler_power_watts", **per_model) == 120.0
    assert value(metrics, "frugal_autoscaler_power_capped", **per_model) == 1
    metrics.count_request("GET")
    metrics.count_request("PATCH")
    assert value(metrics, "frugal_operator_api_requests_total") == 2
    assert value(metrics, "frugal_operator_api_writes_total") == 1


def test_phase_is_one_series_per_phase_and_failed_jobs_count_by_stage() -> None:
    from frugal.operator.decision.conditions import Phase

    metrics = OperatorMetrics()
    metrics.assessed("ml", "digits", Phase.COMPRESSING, {})
    assert value(metrics, "frugal_model_deployment_phase", namespace="ml", model_deployment="digits",
                 phase="Compressing") == 1  # fmt: skip
    assert sum(s["phase"] != "Compressing" for s in series(metrics, "frugal_model_deployment_phase")) == 5
    metrics.assessed("ml", "digits", Phase.FAILED, {"compression": 1})
    phases = {s["phase"]: value(metrics, "frugal_model_deployment_phase", **s)
              for s in series(metrics, "frugal_model_deployment_phase")}  # fmt: skip
    assert phases == {p.value: (1.0 if p is Phase.FAILED else 0.0) for p in Phase}
    per_md = {"namespace": "ml", "model_deployment": "digits"}
    assert value(metrics, "frugal_model_deployment_failed_jobs", **per_md, stage="compression") == 1
    assert value(metrics, "frugal_model_deployment_failed_jobs", **per_md, stage="profiling") == 0
    metrics.forget("ml", "digits")
    assert series(metrics, "frugal_model_deployment_phase") == []
    assert series(metrics, "frugal_model_deployment_failed_jobs") == []


def test_the_compression_report_is_one_series_per_variant_and_follows_status() -> None:
    metrics = OperatorMetrics()
    report = [
        {"name": "fp32", "sizeBytes": 4000, "accepted": True, "metric": {"name": "f1", "value": 0.9, "drop": 0}},
        {"name": "int8", "sizeBytes": 1000, "accepted": False, "metric": {"name": "f1", "value": 0.7, "drop": 0.2}},
        {"name": "unscored", "sizeBytes": 900, "accepted": False, "metric": {}},
    ]
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS, "variants": report})
    per = {"namespace": "ml", "model": "digits", "model_deployment": "digits"}
    assert value(metrics, "frugal_variant_size_bytes", **per, variant="int8") == 1000
    assert value(metrics, "frugal_variant_accepted", **per, variant="fp32") == 1
    assert value(metrics, "frugal_variant_accepted", **per, variant="int8") == 0
    assert value(metrics, "frugal_variant_metric", **per, variant="int8", metric="f1") == 0.7
    assert value(metrics, "frugal_variant_metric_drop", **per, variant="int8", metric="f1") == 0.2
    assert {s["variant"] for s in series(metrics, "frugal_variant_metric")} == {"fp32", "int8"}
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS, "variants": report[:1]})  # a new generation's report
    assert {s["variant"] for s in series(metrics, "frugal_variant_size_bytes")} == {"fp32"}
    metrics.forget("ml", "digits")
    assert series(metrics, "frugal_variant_size_bytes") == series(metrics, "frugal_variant_metric") == []


def test_a_new_report_drops_every_series_of_the_variants_that_went_away() -> None:
    metrics = OperatorMetrics()
    scored = {"name": "int8", "sizeBytes": 1000, "accepted": True, "metric": {"value": 0.8, "drop": -0.1}}
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS, "variants": [scored]})
    per = {"namespace": "ml", "model": "digits", "model_deployment": "digits", "variant": "int8"}
    assert value(metrics, "frugal_variant_metric", **per, metric="accuracy") == 0.8  # no metric name: accuracy
    assert value(metrics, "frugal_variant_metric_drop", **per, metric="accuracy") == 0.0  # never below 0
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS, "variants": [{"name": "fp32"}]})
    for name in ("frugal_variant_size_bytes", "frugal_variant_accepted"):
        assert [s["variant"] for s in series(metrics, name)] == ["fp32"], name
    assert value(metrics, "frugal_variant_size_bytes", **{**per, "variant": "fp32"}) == 0
    assert series(metrics, "frugal_variant_metric") == series(metrics, "frugal_variant_metric_drop") == []


def test_a_new_decision_replaces_the_desired_shards_and_observe_keeps_the_cost() -> None:
    metrics = OperatorMetrics()
    metrics.autoscaled(("ml", "digits", "digits"), [3, 2], "Steady", 1.0, 40.0, power_capped=False)
    metrics.autoscaled(("ml", "digits", "digits"), [4], "Steady", 2.0, 50.0, power_capped=False)
    assert [s["shard"] for s in series(metrics, "frugal_autoscaler_desired_replicas")] == ["0"]
    assert [s["reason"] for s in series(metrics, "frugal_autoscaler_reason")] == ["Steady"]
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS})
    per_model = {"namespace": "ml", "model": "digits", "model_deployment": "digits"}
    assert value(metrics, "frugal_cost_per_hour_usd", **per_model) == 2.0
    assert value(metrics, "frugal_autoscaler_power_capped", **per_model) == 0


def test_another_served_model_name_drops_the_series_under_the_old_one() -> None:
    metrics = OperatorMetrics()
    metrics.observe(model_deployment("digits", model="digits-v1"), SELECTION, {"shards": SHARDS})
    autoscaled(metrics, "digits", 1.0)  # as ("ml", "digits", "digits"): the served name differs
    assert series(metrics, "frugal_slo_latency_p95_seconds") == series(metrics, "frugal_replicas") == []
    assert {s["model"] for s in series(metrics, "frugal_autoscaler_power_watts")} == {"digits"}


def test_forget_drops_a_model_deployment_that_was_only_assessed() -> None:
    from frugal.operator.decision.conditions import Phase

    metrics = OperatorMetrics()
    metrics.assessed("ml", "digits", Phase.PENDING, {"profiling": 2})
    metrics.assessed("ml", "other", Phase.SERVING, {})
    assert series(metrics, "frugal_replicas") == []  # no model known: none of the per-model series
    metrics.forget("ml", "digits")
    metrics.forget("ml", "digits")
    for name in ("frugal_model_deployment_phase", "frugal_model_deployment_failed_jobs"):
        assert {s["model_deployment"] for s in series(metrics, name)} == {"other"}, name


def test_the_exposition_names_each_gauge_with_its_help_and_type_even_before_any_model() -> None:
    from prometheus_client import generate_latest

    metrics = OperatorMetrics()
    header = "# HELP frugal_replicas Desired serving replicas per shard.\n# TYPE frugal_replicas gauge\n"
    assert header in generate_latest(metrics.registry).decode()
    metrics.observe(model_deployment("digits"), SELECTION, {"shards": SHARDS[:1]})
    sample = ('frugal_replicas{hardware_profile="cpu-small",model="digits",model_deployment="digits",'
              'namespace="ml",shard="0",variant="int8-dynamic"} 3.0\n')  # fmt: skip
    assert header + sample in generate_latest(metrics.registry).decode()
    assert [list(s) for s in series(metrics, "frugal_replicas")] == [
        ["namespace", "model", "model_deployment", "shard", "variant", "hardware_profile"]
    ]


def test_a_scrape_while_other_threads_update_sees_whole_model_deployments() -> None:
    import threading

    metrics = OperatorMetrics()
    mds = [model_deployment(f"digits-{i}") for i in range(20)]
    done = threading.Event()

    def churn() -> None:
        while not done.is_set():
            for md in mds:
                metrics.observe(md, SELECTION, {"shards": SHARDS})
                autoscaled(metrics, md.owner.name, 1.0)
                metrics.forget("ml", md.owner.name)

    workers = [threading.Thread(target=churn) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(50):
            replicas = series(metrics, "frugal_replicas")
            shards = {s["model_deployment"]: 0 for s in replicas}
            for s in replicas:
                shards[s["model_deployment"]] += 1
            assert set(shards.values()) <= {2}
    finally:
        done.set()
        for worker in workers:
            worker.join()
