"""kube-score, the ecosystem's manifest linter (built by `scripts/kube-score-binary.sh`), on the rendered
chart and on every kind of object the operator creates: no CRITICAL finding but those accepted here,
each with its reason.

The children are what the pure decision returns for a ModelDeployment that uses every feature that
shapes a pod: distillation across two workers on the GPU pool (an Indexed Job and its headless
Service), profiling on two pools, two shards, scale to zero (the front), a PodMonitor and the
NetworkPolicies (`--network-policies`), with the HardwareProfiles of `examples/hardwareprofiles.yaml`;
and a BatchInference's two Jobs (the Indexed scoring Job on the GPU pool, then the aggregation).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, REPO_ROOT, ensure_binaries

from frugal.operator.api.spec import parse_batch_inference, parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import artifact_files
from frugal.operator.decision.batch_inference import BatchObserved, Progress, ResolvedModel, decide_batch
from frugal.operator.decision.conditions import Job, JobState
from frugal.operator.decision.decide import ClusterState, Settings, decide
from frugal.operator.manifests import batch_jobs
from frugal.schema.artifact_format import (
    FileEntry,
    Manifest,
    Profile,
    ProfileRow,
    Score,
    StageFile,
    StageSet,
    Variant,
)

# Findings accepted, by kube-score test name, and why.
ACCEPTED = {
    # Serving pods start on every scale-up and on every wake from zero: IfNotPresent spares each start
    # a registry round trip (and a registry outage). Tags are not mutable in a release; pin by digest
    # (image.tag / a HardwareProfile's image "name@sha256:...") where that matters.
    "container-image-pull-policy": "cold starts: IfNotPresent, pin images by digest",
}
# With the chart's defaults, the operator pod has no NetworkPolicy (networkPolicy.enabled is off: the
# namespace Prometheus scrapes from differs per cluster, and a wrong guess silently loses the metrics).
DEFAULTS_ACCEPTED = {"The pod does not have a matching NetworkPolicy"}
# A BatchInference's pods get no NetworkPolicy from --network-policies (only a ModelDeployment's do):
# they listen on no port and talk to nothing but their volumes; a namespace's default-deny policy, where
# the cluster has one, covers them.
BATCH_ACCEPTED = "The pod does not have a matching NetworkPolicy"
# The node model cache's agent (modelCache.enabled) runs as root in its container: it owns the cache's
# hostPath and the per-namespace directories the kubelet creates there as root, with CHOWN, FOWNER and
# DAC_OVERRIDE only, a read-only root filesystem, no service account token and no network.
MODEL_CACHE_ACCEPTED = {"(model-cache) The container is running with a low user ID",
                        "(model-cache) The container running with a low group ID"}  # fmt: skip


def two_stages(variant: str) -> StageSet:
    return StageSet(
        count=2,
        stages=tuple(
            StageFile(index=i, file=f"variants/{variant}/stages-2/stage-{i}/model.onnx", inputs=(), outputs=())
            for i in range(2)
        ),
    )


def kube_score() -> Path:
    cache = Path(os.environ.get("FRUGAL_CACHE_DIR") or Path.home() / ".cache" / "frugal")
    env = cache / "bin" / "kube-score.env"
    assert env.is_file(), f"{env} missing: run scripts/kube-score-binary.sh (scripts/test.sh does)"
    return Path(env.read_text().strip().split("=", 1)[1])


def criticals(path: Path) -> list[str]:
    ignored = [flag for name in ACCEPTED for flag in ("--ignore-test", name)]
    proc = subprocess.run([kube_score(), "score", "--output-format", "ci", *ignored, path],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    assert "[OK]" in proc.stdout, proc.stdout[:2000]  # it read and scored the objects
    return [line for line in proc.stdout.splitlines() if line.startswith("[CRITICAL]")]


def example_profiles() -> dict[str, Any]:
    documents = yaml.safe_load_all((EXAMPLES_DIR / "hardwareprofiles.yaml").read_text())
    return {d["metadata"]["name"]: parse_hardware_profile(d) for d in documents if d}


def children() -> list[dict[str, Any]]:
    profiles = example_profiles()
    md = parse_model_deployment({
        "apiVersion": "frugal.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {
            "model": {"uri": "zoo://digits-mlp"},
            "compression": {"hardwareProfile": "gpu-t4", "distillation": {"workers": 2, "student": {"widthFactor": 0.5}}},
            "serving": {"hardwareProfiles": ["cpu-small", "gpu-t4"], "slo": {"latencyP95Ms": 20}, "shards": 2},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 4},
        },
    })  # fmt: skip
    variants = [
        Variant(name="fp32", file="variants/fp32/model.onnx", steps=(), inputs=(), outputs=(), size_bytes=4000,
                metric=Score(name="accuracy", value=0.97, baseline=0.97, drop=0.0), latency=None,
                stage_sets=(two_stages("fp32"),)),
        Variant(name="int8", file="variants/int8/model.onnx", steps=("quantization:dynamic-int8",), inputs=(),
                outputs=(), size_bytes=1000, metric=Score(name="accuracy", value=0.968, baseline=0.97, drop=0.002),
                latency=None, stage_sets=(two_stages("int8"),)),
    ]  # fmt: skip
    files = {v.file: FileEntry(sha256="0" * 64, size_bytes=v.size_bytes) for v in variants}
    for v in variants:  # the stage files compression cut for spec.serving.shards: 2
        files |= {s.file: FileEntry(sha256="0" * 64, size_bytes=v.size_bytes // 2) for s in v.stage_sets[0].stages}
    manifest = Manifest(model="digits", generation=1, source="zoo://digits-mlp", created_at="2026-01-01T00:00:00Z",
                        files=files, variants=tuple(variants))  # fmt: skip
    rows = (ProfileRow(name="fp32", shards=1, batch_size=32, latency_p95_ms=5, throughput_rps=500),
            ProfileRow(name="int8", shards=1, batch_size=32, latency_p95_ms=4, throughput_rps=900))  # fmt: skip
    measured = {
        name: Profile(hardware_profile=name, provider="CPUExecutionProvider", variants=rows)
        for name in ("cpu-small", "gpu-t4")
    }
    found = artifact_files.Artifacts(manifest, None, measured)
    settings = Settings(image="registry.example/frugal:0.1.0", storage_uri="pvc://frugal-artifacts",
                        network_policies=True)  # fmt: skip
    done = Job(JobState.SUCCEEDED, name="done")
    profiled = ClusterState(compression=done, profiling={"cpu-small": done, "gpu-t4": done}, pod_monitors=True)
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for state, artifacts in ((ClusterState(), None), (ClusterState(compression=done), found), (profiled, found)):
        for obj in decide(md, profiles, state, artifacts, settings).apply:
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return list(objects.values())


def batch_children() -> list[dict[str, Any]]:
    """A BatchInference's scoring Job, then its aggregation Job, as the pure decision returns them."""
    profiles = example_profiles()
    batch = parse_batch_inference({
        "apiVersion": "frugal.dev/v1alpha1", "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": "ml", "uid": "u-b", "generation": 1},
        "spec": {"model": {"artifacts": {"uri": "pvc://frugal-artifacts/ml/digits/gen-1", "variant": "int8"}},
                 "input": {"uri": "pvc://data/digits.npz"}, "output": {"uri": "pvc://data/scores"},
                 "hardwareProfiles": ["gpu-t4"], "workers": 2, "deadlineSeconds": 3600},
    })  # fmt: skip
    locations = {
        batch_jobs.INPUT: batch_jobs.locate(batch.input_uri, None),
        batch_jobs.OUTPUT: batch_jobs.locate(batch.output_uri, None),
        batch_jobs.ARTIFACTS: batch_jobs.locate("pvc://frugal-artifacts/ml/digits/gen-1", None),
    }
    model = ResolvedModel("int8", "pvc://frugal-artifacts/ml/digits/gen-1", {"gpu-t4": 4000.0})
    done = Job(JobState.SUCCEEDED, name="done")
    objects: dict[str, dict[str, Any]] = {}
    for workers in (Job(JobState.ABSENT), done):
        observed = BatchObserved(model, workers=workers, progress=Progress(shards_total=2, rows_total=1000))
        for obj in decide_batch(batch, profiles, locations, observed, "registry.example/frugal:0.1.0").apply:
            objects[obj["metadata"]["name"]] = obj
    return list(objects.values())


def test_the_operators_children_have_no_critical_finding(tmp_path: Path) -> None:
    objects = children()
    kinds = {o["kind"] for o in objects}
    assert kinds == {"Job", "Service", "Deployment", "PodDisruptionBudget", "PodMonitor", "NetworkPolicy",
                     "ServiceAccount", "Role", "RoleBinding"}, kinds  # fmt: skip
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} >= {"digits-front", "digits-g1-shard-1"}
    path = tmp_path / "children.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    assert criticals(path) == []


def test_a_batch_inferences_jobs_have_no_critical_finding_but_the_network_policy(tmp_path: Path) -> None:
    objects = batch_children()
    assert sorted(o["metadata"]["name"] for o in objects) == ["scores-g1-aggregate", "scores-g1-score"]
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    found = criticals(path)
    assert [f for f in found if BATCH_ACCEPTED not in f] == [], found


@pytest.mark.parametrize(
    "values",
    [["--set", "networkPolicy.enabled=true"], [], ["--set", "networkPolicy.enabled=true", "--set", "modelCache.enabled=true"]],
    ids=["hardened", "defaults", "model-cache"],
)
def test_the_rendered_chart_has_no_critical_finding(tmp_path: Path, values: list[str]) -> None:
    rendered = subprocess.run(
        [ensure_binaries().helm, "template", "frugal", REPO_ROOT / "charts" / "frugal", "--namespace", "frugal-system",
         *values], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = tmp_path / "chart.yaml"
    path.write_text(rendered)
    found = criticals(path)
    accepted = DEFAULTS_ACCEPTED if not values else MODEL_CACHE_ACCEPTED if "modelCache.enabled=true" in values else set()
    if "modelCache.enabled=true" in values:
        assert "kind: DaemonSet" in rendered  # the agent is there to be scored
    assert [f for f in found if not any(a in f for a in accepted)] == [], found
