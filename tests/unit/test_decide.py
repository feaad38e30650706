"""The pure reconcile decision: which objects to apply, the plan and the status, step by step."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import artifact_files
from frugal.operator.decision.conditions import Job, JobState, Phase, Reason
from frugal.operator.decision.decide import (
    ClusterState,
    artifacts_to_remove,
    decide,
    host_path_refusal,
)
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.decision.planner import Option
from frugal.operator.decision.revisions import (
    pipeline_hash,
    rollover_from_status,
    with_effective_generation,
    with_revision,
)
from frugal.operator.manifests import serving_objects
from frugal.schema.artifact_format import Manifest, Profile, Report

BODY: dict[str, Any] = {
    "apiVersion": "frugal.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
    "spec": {
        "model": {"uri": "zoo://digits-mlp"},
        "serving": {"hardwareProfiles": ["cpu", "gpu"], "slo": {"latencyP95Ms": 20}},
    },
}


def profile(name: str, cost: str, watts: float) -> Any:
    return parse_hardware_profile(
        {
            "metadata": {"name": name},
            "spec": {
                "accelerator": {"kind": "cpu", "count": 1},
                "costPerHour": cost,
                "power": {"idleWatts": 1, "maxWatts": watts},
            },
        }
    )


PROFILES = {"cpu": profile("cpu", "0.10", 20), "gpu": profile("gpu", "0.50", 70)}
MD = parse_model_deployment(BODY)
SETTINGS = Settings(image="img", storage_uri="file:///store", allow_host_path=True)  # a local store
DONE = Job(JobState.SUCCEEDED, name="x")


def manifest_of(variants: list[dict[str, Any]], stage_counts: tuple[int, ...] = ()) -> Manifest:
    """manifest.json as compression writes it, around `variants` (name, sizeBytes, steps, metric), each
    cut into every count of `stage_counts` (stage files of an equal share of the variant's bytes)."""
    files = {v["name"]: f"variants/{v['name']}/model.onnx" for v in variants}
    listed = {files[v["name"]]: {"sha256": "0" * 64, "sizeBytes": v["sizeBytes"]} for v in variants}
    stage_sets: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        for count in stage_counts:
            stages = []
            for index in range(count):
                file = f"variants/{v['name']}/stages-{count}/stage-{index}/model.onnx"
                listed[file] = {"sha256": "0" * 64, "sizeBytes": v["sizeBytes"] // count}
                stages.append({"index": index, "file": file, "inputs": [], "outputs": []})
            stage_sets.setdefault(v["name"], []).append({"count": count, "stages": stages})
    return Manifest.model_validate(
        {
            "model": "digits",
            "generation": 1,
            "source": "zoo://digits-mlp",
            "createdAt": "2026-01-01T00:00:00Z",
            "files": listed,
            "variants": [
                {
                    "file": files[v["name"]],
                    "inputs": [],
                    "outputs": [],
                    "latency": None,
                    "stageSets": stage_sets.get(v["name"], []),
                    **v,
                }
                for v in variants
            ],
        }
    )


def profile_of(name: str, rows: list[dict[str, Any]]) -> Profile:
    """profiles/<name>.json as the profiling Job writes it, with `rows` (name, latencyP95Ms, throughputRps)."""
    return Profile.model_validate(
        {
            "hardwareProfile": name,
            "provider": "CPUExecutionProvider",
            "variants": [{"shards": 1, "batchSize": 32, **row} for row in rows],
        }
    )


def report_of(latencies: dict[str, dict[str, Any]]) -> Report:
    """report.json as compression writes it, with each named variant's latency (batchMs, throughputPerS)."""
    return Report.model_validate(
        {
            "model": "digits",
            "source": "zoo://digits-mlp",
            "metric": "accuracy",
            "budget": {"metric": None, "maxDrop": 0.01, "minValue": None},
            "servingBatchSize": 32,
            "ranking": list(latencies),
            "chosen": {},
            "variants": [
                {
                    "name": name,
                    "steps": [],
                    "status": "kept",
                    "reason": None,
                    "sizeBytes": 1000,
                    "metric": None,
                    "latency": {"batch1Ms": 1, "batchSize": 32, "batchSpread": 0.0, "threads": 1, **latency},
                    "chosen": False,
                    "chosenAs": [],
                }
                for name, latency in latencies.items()
            ],
        }
    )


MANIFEST = manifest_of(
    [
        {
            "name": "fp32",
            "sizeBytes": 4000,
            "steps": [],
            "metric": {"name": "accuracy", "value": 0.97, "baseline": 0.97, "drop": 0.0},
        },
        {
            "name": "int8",
            "sizeBytes": 1000,
            "steps": ["quantization:dynamic-int8"],
            "metric": {"name": "accuracy", "value": 0.968, "baseline": 0.97, "drop": 0.002},
        },
    ]
)
PROFILED = artifact_files.Artifacts(
    MANIFEST,
    None,
    {
        "cpu": profile_of(
            "cpu",
            [
                {"name": "fp32", "latencyP95Ms": 30, "throughputRps": 500},
                {"name": "int8", "latencyP95Ms": 15, "throughputRps": 900},
            ],
        ),
        "gpu": profile_of(
            "gpu",
            [
                {"name": "fp32", "latencyP95Ms": 3, "throughputRps": 1500},
                {"name": "int8", "latencyP95Ms": 3, "throughputRps": 1560},
            ],
        ),
    },
)


def kinds(decision: Any) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in decision.apply]


def test_missing_profile_applies_nothing() -> None:
    decision = decide(MD, {"cpu": PROFILES["cpu"]}, ClusterState(), None, SETTINGS)
    assert decision.apply == ()
    assert decision.assessment.condition("Compressed").reason == Reason.HARDWARE_PROFILE_MISSING
    assert "gpu" in decision.assessment.message


def with_spec(**changes: Any) -> Any:
    body = copy.deepcopy(BODY)
    body["spec"].update(changes)
    return parse_model_deployment(body)


def test_file_uris_are_refused_naming_the_field_unless_host_path_is_allowed() -> None:
    on_claim = Settings(storage_uri="pvc://frugal-artifacts")
    assert host_path_refusal(MD, on_claim) is None
    cases = {
        "spec.storage.uri": with_spec(storage={"uri": "file:///"}),
        "spec.model.uri": with_spec(
            model={"uri": "file:///models/m.onnx"}, data={"validation": {"uri": "pvc://d/val.npz"}}
        ),
        "spec.data.validation.uri": with_spec(data={"validation": {"uri": "file:///etc/val.npz"}}),
    }
    for field, md in cases.items():
        refused = host_path_refusal(md, on_claim)
        assert refused is not None and refused.startswith(field), refused
        decision = decide(md, PROFILES, ClusterState(), None, on_claim)
        assert decision.apply == () and decision.assessment.phase is Phase.FAILED
        assert decision.assessment.condition("Compressed").reason == Reason.HOST_PATH_NOT_ALLOWED
        assert decision.assessment.condition("Degraded").status is True
        assert host_path_refusal(md, dataclasses.replace(on_claim, allow_host_path=True)) is None
    # The operator's own default store counts too: it is where spec.storage.uri falls back to.
    refused = host_path_refusal(MD, Settings(storage_uri="file:///var/frugal"))
    assert refused is not None and "--storage-uri" in refused


def test_network_policies_come_with_the_first_job_only_when_asked_for() -> None:
    confined = dataclasses.replace(SETTINGS, network_policies=True, monitoring_namespace="obs")
    first = decide(MD, PROFILES, ClusterState(), None, confined)
    policies = [o for o in first.apply if o["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["digits-serving", "digits-jobs", "digits-rendezvous"]
    assert first.apply.index(policies[-1]) < next(i for i, o in enumerate(first.apply) if o["kind"] == "Job")
    assert not [o for o in decide(MD, PROFILES, ClusterState(), None, SETTINGS).apply if o["kind"] == "NetworkPolicy"]


def test_a_refused_model_deployment_has_no_artifacts_to_remove() -> None:
    md = with_spec(storage={"uri": "file:///", "retainArtifacts": False})
    assert artifacts_to_remove(md, Settings()) is None
    assert artifacts_to_remove(md, Settings(allow_host_path=True)) is not None


def test_first_pass_creates_the_compression_job_once() -> None:
    first = decide(MD, PROFILES, ClusterState(), None, SETTINGS)
    assert kinds(first) == [("Job", "digits-g1-compress")]
    assert first.assessment.phase is Phase.COMPRESSING
    assert first.assessment.condition("Compressed").reason == Reason.COMPRESSION_RUNNING
    running = decide(MD, PROFILES, ClusterState(compression=Job(JobState.RUNNING, name="j")), None, SETTINGS)
    assert running.apply == () and running.assessment.phase is Phase.COMPRESSING


def test_after_compression_one_profiling_job_per_candidate() -> None:
    decision = decide(
        MD, PROFILES, ClusterState(compression=DONE), artifact_files.Artifacts(MANIFEST, None, {}), SETTINGS
    )
    assert kinds(decision) == [("Job", "digits-g1-profile-cpu"), ("Job", "digits-g1-profile-gpu")]
    assert decision.assessment.phase is Phase.PROFILING
    assert decision.status["artifacts"] == {
        "uri": "file:///store/ml/digits/gen-1",
        "generation": 1,
        "pipelineHash": pipeline_hash(MD),
    }


def test_unreadable_artifacts_become_a_condition() -> None:
    error = artifact_files.ArtifactError("/store/ml/digits/gen-1/manifest.json is missing")
    decision = decide(MD, PROFILES, ClusterState(compression=DONE), error, SETTINGS)
    assert decision.assessment.phase is Phase.FAILED
    assert decision.assessment.condition("Compressed").reason == Reason.ARTIFACTS_UNREADABLE


def test_profiled_plans_and_deploys_the_cheapest_option() -> None:
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE})
    decision = decide(MD, PROFILES, state, PROFILED, SETTINGS)
    assert decision.selection is not None
    assert (decision.selection.variant, decision.selection.profile) == ("int8", "cpu")
    assert kinds(decision) == [
        ("Deployment", "digits-g1-shard-0"),
        ("Service", "digits-g1-shard-0"),
        ("PodDisruptionBudget", "digits-g1-shard-0"),
        ("Service", "digits"),
    ]
    assert decision.assessment.phase is Phase.DEPLOYING
    status = decision.status
    assert status["selected"]["variant"] == "int8" and status["selected"]["hardwareProfile"] == "cpu"
    fp32 = next(v for v in status["variants"] if v["name"] == "fp32")
    fp32_on_cpu = next(p for p in fp32["profiles"] if p["hardwareProfile"] == "cpu")
    assert fp32_on_cpu["meetsSlo"] is False and "exceeds the SLO" in fp32_on_cpu["verdict"]
    int8 = next(v for v in status["variants"] if v["name"] == "int8")
    chosen = next(p for p in int8["profiles"] if p["hardwareProfile"] == "cpu")
    assert chosen["verdict"] == "chosen" and chosen["replicas"] >= 1 and chosen["joulesPerRequest"] > 0
    assert status["shards"] == [{"index": 0, "replicas": 1, "readyReplicas": 0}]
    assert "cost" not in status  # the autoscaler writes the cost of what runs
    assert "replicas" not in decision.apply[0]["spec"]  # spec.replicas belongs to the autoscaler
    assert decision.scale == (
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "digits-g1-shard-0", "namespace": "ml"},
            "spec": {"replicas": 1},
        },
    )


def test_with_a_node_cache_the_namespace_gets_its_volume_and_claim_and_the_pods_mount_them() -> None:
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE})
    cached = dataclasses.replace(SETTINGS, node_cache_root="/var/lib/frugal/model-cache")
    decision = decide(MD, PROFILES, state, PROFILED, cached)
    assert kinds(decision)[:3] == [
        ("PersistentVolume", "frugal-model-cache-ml"),
        ("PersistentVolumeClaim", "frugal-model-cache"),
        ("Deployment", "digits-g1-shard-0"),
    ]
    volume, claim, deployment = decision.apply[:3]
    assert volume["spec"]["hostPath"]["path"] == "/var/lib/frugal/model-cache/ml"  # its namespace's only
    assert volume["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ml",
                                          "name": "frugal-model-cache"}  # fmt: skip
    assert claim["spec"]["volumeName"] == "frugal-model-cache-ml"
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == "frugal-model-cache"
    assert "ownerReferences" not in claim["metadata"]  # shared by the namespace's ModelDeployments
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "node-cache", "persistentVolumeClaim": {"claimName": "frugal-model-cache"}} in pod["volumes"]
    assert not [v for v in pod["volumes"] if v["name"] == "node-cache" and "hostPath" in v]  # restricted forbids it
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "node-cache"}
    assert mounts["/var/cache/frugal/node/variants"]["readOnly"] is True
    assert mounts["/var/cache/frugal/node/variants"]["subPath"] == "variants"
    assert not mounts["/var/cache/frugal/node/inbox"].get("readOnly")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["FRUGAL_NODE_CACHE"] == "/var/cache/frugal/node"
    plain = decide(MD, PROFILES, state, PROFILED, SETTINGS)
    assert not [k for k in kinds(plain) if k[0].startswith("Persistent")]
    plain_pod = plain.apply[0]["spec"]["template"]["spec"]
    assert "FRUGAL_NODE_CACHE" not in {e["name"] for e in plain_pod["containers"][0]["env"]}


def test_a_pod_monitor_is_wanted_once_serving_is_planned_where_the_cluster_has_the_kind() -> None:
    monitors = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, pod_monitors=True)
    decision = decide(MD, PROFILES, monitors, PROFILED, SETTINGS)
    assert kinds(decision)[-1] == ("PodMonitor", "digits-serving")
    without = decide(
        MD, PROFILES, ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}), PROFILED, SETTINGS
    )
    assert "PodMonitor" not in {kind for kind, _ in kinds(without)}
    not_yet = decide(MD, PROFILES, ClusterState(compression=DONE, pod_monitors=True), PROFILED, SETTINGS)
    assert "PodMonitor" not in {kind for kind, _ in kinds(not_yet)}


def test_ready_shards_make_it_serving_and_prune_the_old_generation() -> None:
    state = ClusterState(
        compression=DONE,
        profiling={"cpu": DONE, "gpu": DONE},
        shard_replicas={0: 2},
        shard_ready={0: 2},
        live_generation=None,
    )
    decision = decide(MD, PROFILES, state, PROFILED, SETTINGS)
    assert decision.assessment.phase is Phase.SERVING and decision.prune_superseded
    assert decision.status["shards"] == [{"index": 0, "replicas": 2, "readyReplicas": 2}]
    assert decision.scale == ()  # an existing shard's count is the autoscaler's, never reset here


def test_new_generation_keeps_the_old_endpoint_until_ready() -> None:
    body = copy.deepcopy(BODY)
    body["metadata"]["generation"] = 2
    md = parse_model_deployment(body)
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, live_generation=1)
    decision = decide(md, PROFILES, state, PROFILED, SETTINGS)
    assert ("Service", "digits") not in kinds(decision)
    assert not decision.prune_superseded
    assert decision.assessment.condition("Ready").reason == Reason.PREVIOUS_GENERATION_SERVING


def test_nothing_feasible_fails_with_the_planners_reason() -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["serving"]["slo"] = {"latencyP95Ms": 1}
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE})
    decision = decide(parse_model_deployment(body), PROFILES, state, PROFILED, SETTINGS)
    assert decision.assessment.phase is Phase.FAILED
    assert "latencyP95Ms" in decision.assessment.condition("Ready").message
    assert not [o for o in decision.apply if o["kind"] == "Deployment"]


def test_single_profile_with_failed_profiling_falls_back_to_the_report() -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["serving"]["hardwareProfiles"] = ["cpu"]
    report = report_of(
        {"fp32": {"batchMs": 5, "throughputPerS": 6400}, "int8": {"batchMs": 4, "throughputPerS": 8000}}
    )
    found = artifact_files.Artifacts(MANIFEST, report, {})
    state = ClusterState(compression=DONE, profiling={"cpu": Job(JobState.FAILED, "oom", "p")})
    decision = decide(parse_model_deployment(body), PROFILES, state, found, SETTINGS)
    assert decision.plan is not None and decision.plan.used_fallback
    assert decision.assessment.condition("Profiled").reason == Reason.PROFILING_FALLBACK
    assert "compression report" in decision.status["selected"]["reason"]


def test_report_numbers_are_read_from_the_compression_reports_latency() -> None:
    report = report_of({"int8": {"batchMs": 4, "throughputPerS": 8000}})
    variants = artifact_files.planner_variants(artifact_files.Artifacts(MANIFEST, report, {}))
    int8 = next(v for v in variants if v.name == "int8")
    assert (int8.report_latency_p95_ms, int8.report_throughput_rps) == (4.0, 8000.0)
    assert int8.accuracy_drop == 0.002 and int8.size_bytes == 1000


def test_an_autoscaling_only_edit_keeps_the_generation_its_artifacts_were_built_for() -> None:
    status = {"artifacts": {"generation": 1, "pipelineHash": pipeline_hash(MD)}}
    edited = copy.deepcopy(BODY)
    edited["metadata"]["generation"] = 2
    edited["spec"].setdefault("autoscaling", {})["maxReplicas"] = 9
    kept = with_effective_generation(parse_model_deployment(edited), status)
    assert kept.owner.generation == 1 and kept.spec.autoscaling.max_replicas == 9
    reshaped = copy.deepcopy(edited)
    reshaped["spec"]["serving"]["slo"] = {"latencyP95Ms": 77}
    assert with_effective_generation(parse_model_deployment(reshaped), status).owner.generation == 2
    assert with_effective_generation(parse_model_deployment(edited), {}).owner.generation == 2


def scale_to_zero_md(generation: int = 1) -> Any:
    body = copy.deepcopy(BODY)
    body["metadata"]["generation"] = generation
    body["spec"]["autoscaling"] = {"minReplicas": 0, "scaleToZeroAfterSeconds": 60}
    return parse_model_deployment(body)


def test_minreplicas_0_puts_a_front_before_the_model_and_the_endpoint_selects_it() -> None:
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE})
    decision = decide(scale_to_zero_md(), PROFILES, state, PROFILED, SETTINGS)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in decision.apply}
    assert kinds(decision)[-3:] == [
        ("Service", "digits-live"),
        ("Deployment", "digits-front"),
        ("Service", "digits"),
    ]
    endpoint, live = by_name[("Service", "digits")], by_name[("Service", "digits-live")]
    front = by_name[("Deployment", "digits-front")]
    assert endpoint["spec"]["selector"] == front["spec"]["selector"]["matchLabels"]
    assert front["spec"]["template"]["metadata"]["labels"].items() >= endpoint["spec"]["selector"].items()
    assert live["spec"]["selector"]["frugal.dev/generation"] == "1"
    assert live["spec"]["selector"]["frugal.dev/shard"] == "0"
    command = front["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["frugal", "front"]
    assert command[command.index("--upstream") + 1] == "http://digits-live.ml.svc:8080"
    assert command[command.index("--model-name") + 1] == MD.model_name
    assert front["spec"]["replicas"] == 1  # the front is never scaled: it is what wakes the model
    assert (
        "frugal.dev/generation" not in front["spec"]["template"]["metadata"]["labels"]
    )  # no restart per rollout
    # the first shard starts with one replica (there is nothing to wake yet), then the autoscaler decides
    assert decision.scale[0]["spec"]["replicas"] == 1


def test_a_scaled_to_zero_model_still_serves_and_keeps_its_live_generation() -> None:
    state = ClusterState(
        compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, shard_replicas={0: 0}, shard_ready={0: 0},
        live_generation=1, front_exists=True,
    )  # fmt: skip
    decision = decide(scale_to_zero_md(), PROFILES, state, PROFILED, SETTINGS)
    assert decision.assessment.condition("Ready").status is True
    assert decision.assessment.phase is Phase.SERVING
    assert ("Deployment", "digits-front") in kinds(decision) and decision.delete == ()
    # asleep, the live revision is still what the front reaches and may wake (e.g. after an upgrade)
    assert {("Role", "digits-front"), ("RoleBinding", "digits-front"), ("Service", "digits-live")} <= set(
        kinds(decision)
    )


def test_a_new_generation_of_a_fronted_model_moves_the_live_service_only_once_ready() -> None:
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, live_generation=1,
                         front_exists=True)  # fmt: skip
    rolling = decide(scale_to_zero_md(2), PROFILES, state, PROFILED, SETTINGS)
    assert ("Service", "digits-live") not in kinds(rolling) and not rolling.prune_superseded
    ready = dataclasses.replace(state, shard_replicas={0: 1}, shard_ready={0: 1})
    done = decide(scale_to_zero_md(2), PROFILES, ready, PROFILED, SETTINGS)
    live = next(o for o in done.apply if o["metadata"]["name"] == "digits-live")
    assert live["spec"]["selector"]["frugal.dev/generation"] == "2" and done.prune_superseded


def test_what_the_front_may_wake_moves_with_the_live_service_and_only_then() -> None:
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, live_generation=1,
                         front_exists=True)  # fmt: skip
    rolling = decide(scale_to_zero_md(2), PROFILES, state, PROFILED, SETTINGS)
    # While generation 2 starts, the Role and its binding are left as they are (naming generation 1's
    # shards, still live); the front's account is applied on every pass.
    assert ("Role", "digits-front") not in kinds(rolling) and ("RoleBinding", "digits-front") not in kinds(rolling)
    assert ("ServiceAccount", "digits-front") in kinds(rolling)
    ready = dataclasses.replace(state, shard_replicas={0: 1}, shard_ready={0: 1})
    done = decide(scale_to_zero_md(2), PROFILES, ready, PROFILED, SETTINGS)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in done.apply}
    role, live = by_name[("Role", "digits-front")], by_name[("Service", "digits-live")]
    order = kinds(done)
    assert order.index(("Role", "digits-front")) < order.index(("RoleBinding", "digits-front"))
    scale_rule = next(r for r in role["rules"] if r["resources"] == ["deployments/scale"])
    assert scale_rule["resourceNames"] == ["digits-g2-shard-0"]
    assert live["metadata"]["annotations"]["frugal.dev/wake-deployments"] == "digits-g2-shard-0"
    front = by_name[("Deployment", "digits-front")]["spec"]["template"]["spec"]
    assert front["serviceAccountName"] == by_name[("RoleBinding", "digits-front")]["subjects"][0]["name"]


def test_raising_minreplicas_from_0_removes_the_front_and_points_the_endpoint_at_the_model() -> None:
    state = ClusterState(
        compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, shard_replicas={0: 1}, shard_ready={0: 1},
        live_generation=1, front_exists=True,
    )  # fmt: skip
    decision = decide(MD, PROFILES, state, PROFILED, SETTINGS)
    assert decision.delete == (
        ("apps/v1", "Deployment", "digits-front"),
        ("v1", "Service", "digits-live"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "digits-front"),
        ("rbac.authorization.k8s.io/v1", "Role", "digits-front"),
        ("v1", "ServiceAccount", "digits-front"),
    )
    endpoint = next(o for o in decision.apply if o["metadata"]["name"] == "digits")
    assert endpoint["spec"]["selector"]["frugal.dev/shard"] == "0"
    assert ("Deployment", "digits-front") not in kinds(decision)


# -- a re-planning rollover within the generation (status.replan) -----------------------------------

GPU_POOL = parse_hardware_profile(
    {
        "metadata": {"name": "gpu"},
        "spec": {
            "accelerator": {"kind": "cpu", "count": 1},
            "costPerHour": "0.50",
            "power": {"idleWatts": 1, "maxWatts": 70},
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
)
POOLS = {"cpu": PROFILES["cpu"], "gpu": GPU_POOL}
SERVED = ClusterState(
    compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, shard_replicas={0: 1}, shard_ready={0: 1},
    live_generation=1,
)  # fmt: skip


def replan_status(generation: int = 1, revision: int = 1, replicas: int = 3) -> dict[str, Any]:
    """status.replan as the autoscaler writes it: int8 on cpu (the deploy-time choice) -> int8 on gpu."""
    return {
        "replan": {
            "generation": generation,
            "revision": revision,
            "selected": {"variant": "int8", "hardwareProfile": "gpu", "shards": 1},
            "from": {"variant": "int8", "hardwareProfile": "cpu", "shards": 1},
            "replicas": replicas,
            "reason": "Cheaper",
        }
    }


def rolling_over(md: Any, state: ClusterState, status: dict[str, Any]) -> Any:
    """decide() as the reconciler calls it: the rollover read from the status, the new revision's
    shards observed in `state` (the old revision's are not the current one's)."""
    rollover = rollover_from_status(md, status)
    return decide(with_revision(md, rollover), POOLS, state, PROFILED, SETTINGS, rollover)


def test_the_deploy_time_plan_is_what_a_rollover_moves_away_from() -> None:
    decision = decide(MD, POOLS, SERVED, PROFILED, SETTINGS)
    assert decision.selection == Option("int8", "cpu", 1)
    assert rollover_from_status(MD, {}) is None


def test_a_rollover_applies_the_next_revisions_shards_with_the_new_profiles_scheduling() -> None:
    rollover = rollover_from_status(MD, replan_status())
    assert rollover is not None and rollover.revision == 1 and rollover.replicas == 3
    assert rollover.selection == Option("int8", "gpu", 1)
    assert rollover.previous == Option("int8", "cpu", 1)
    # the new revision has no Deployment yet; the endpoint still selects revision 0
    state = dataclasses.replace(SERVED, shard_replicas={}, shard_ready={})
    decision = rolling_over(MD, state, replan_status())
    assert decision.selection == Option("int8", "gpu", 1)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in decision.apply}
    shard = ("digits-g1-r1-shard-0",)
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        assert (kind, *shard) in by_name, kinds(decision)
        obj = by_name[(kind, *shard)]
        assert obj["metadata"]["labels"]["frugal.dev/revision"] == "1"
        assert obj["metadata"]["labels"]["frugal.dev/hardware-profile"] == "gpu"
    assert not any(name.startswith("digits-g1-shard-") for _, name in by_name)  # rev 0 is not re-applied
    deployment = by_name[("Deployment", *shard)]
    assert deployment["spec"]["selector"]["matchLabels"]["frugal.dev/revision"] == "1"
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["frugal.dev/revision"] == "1"
    assert template["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert template["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert by_name[("Service", *shard)]["spec"]["selector"]["frugal.dev/revision"] == "1"
    pdb = by_name[("PodDisruptionBudget", *shard)]
    assert pdb["spec"]["selector"]["matchLabels"]["frugal.dev/revision"] == "1"
    # it starts at the rollover's replicas (what the observed load needs), under the autoscaler's manager
    assert decision.scale == (
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "digits-g1-r1-shard-0", "namespace": "ml"}, "spec": {"replicas": 3}},
    )  # fmt: skip
    assert "replicas" not in deployment["spec"]
    assert decision.status["shards"] == [{"index": 0, "replicas": 3, "readyReplicas": 0}]


def test_the_rollovers_replicas_stay_within_max_replicas() -> None:
    state = dataclasses.replace(SERVED, shard_replicas={}, shard_ready={})
    decision = rolling_over(MD, state, replan_status(replicas=99))
    assert decision.scale[0]["spec"]["replicas"] == MD.spec.autoscaling.max_replicas


def test_the_endpoint_keeps_serving_revision_0_until_every_new_shard_has_a_ready_replica() -> None:
    starting = dataclasses.replace(SERVED, shard_replicas={0: 3}, shard_ready={0: 0})
    decision = rolling_over(MD, starting, replan_status())
    assert ("Service", "digits") not in kinds(decision)  # not moved: revision 0 still selected
    assert not decision.prune_superseded
    ready = decision.assessment.condition("Ready")
    assert ready.status is True and ready.reason == Reason.ROLLING_OVER
    assert decision.assessment.phase is Phase.SERVING
    assert "revision 0" in ready.message and "int8 on cpu" in ready.message and "int8 on gpu" in ready.message
    assert decision.scale == ()  # the shard exists: its count is the autoscaler's


def test_once_the_new_revision_is_ready_the_endpoint_selects_it_and_the_old_one_is_pruned() -> None:
    up = dataclasses.replace(SERVED, shard_replicas={0: 3}, shard_ready={0: 1})
    decision = rolling_over(MD, up, replan_status())
    endpoint = next(o for o in decision.apply if o["metadata"]["name"] == "digits")
    assert endpoint["spec"]["selector"]["frugal.dev/generation"] == "1"
    assert endpoint["spec"]["selector"]["frugal.dev/revision"] == "1"
    assert endpoint["metadata"]["labels"]["frugal.dev/revision"] == "1"
    assert decision.prune_superseded
    assert decision.assessment.phase is Phase.SERVING
    assert decision.assessment.condition("Ready").reason != Reason.ROLLING_OVER
    # the next pass, the endpoint already on revision 1: settled, still revision 1
    settled = rolling_over(MD, dataclasses.replace(up, live_revision=1), replan_status())
    assert settled.assessment.condition("Ready").reason != Reason.ROLLING_OVER and settled.prune_superseded


def test_a_fronted_model_rolls_over_through_its_live_service() -> None:
    md = scale_to_zero_md()
    starting = dataclasses.replace(SERVED, shard_replicas={0: 1}, shard_ready={0: 0}, front_exists=True)
    rolling = rolling_over(md, starting, replan_status())
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in rolling.apply}
    assert ("Deployment", "digits-g1-r1-shard-0") in by_name
    assert ("Service", "digits-live") not in by_name and not rolling.prune_superseded
    endpoint = by_name[("Service", "digits")]  # the endpoint always selects the front
    assert endpoint["spec"]["selector"] == serving_objects.front_selector(md.owner)
    assert rolling.assessment.condition("Ready").reason == Reason.ROLLING_OVER
    ready = dataclasses.replace(starting, shard_ready={0: 1})
    done = rolling_over(md, ready, replan_status())
    live = next(o for o in done.apply if o["metadata"]["name"] == "digits-live")
    assert live["spec"]["selector"]["frugal.dev/generation"] == "1"
    assert live["spec"]["selector"]["frugal.dev/revision"] == "1" and done.prune_superseded
    endpoint = next(o for o in done.apply if o["metadata"]["name"] == "digits")
    assert endpoint["spec"]["selector"] == serving_objects.front_selector(md.owner)


def test_a_replan_of_another_generation_is_ignored() -> None:
    body = copy.deepcopy(BODY)
    body["metadata"]["generation"] = 2
    md = parse_model_deployment(body)
    assert rollover_from_status(md, replan_status(generation=1)) is None
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE}, live_generation=1)
    decision = rolling_over(md, state, replan_status(generation=1))
    assert decision.selection == Option("int8", "cpu", 1)  # the plan's choice, afresh
    assert ("Deployment", "digits-g2-shard-0") in kinds(decision)
    assert not any("-r1-" in name for _, name in kinds(decision))
    assert rollover_from_status(MD, {"replan": {**replan_status()["replan"], "revision": 0}}) is None


def test_status_selected_names_the_rolled_over_option_and_why() -> None:
    decision = rolling_over(MD, dataclasses.replace(SERVED, shard_ready={0: 0}), replan_status())
    selected = decision.status["selected"]
    assert (selected["variant"], selected["hardwareProfile"], selected["shards"]) == ("int8", "gpu", 1)
    assert "re-planned" in selected["reason"] and "status.replan" in selected["reason"]
