"""Every compression step on the digits MLP, through ``compress()``, with real torch and ORT."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from frugal.compression import artifact
from frugal.compression.config import CompressionConfig
from frugal.compression.pipeline import CompressionResult, compress
from frugal.compression.zoo import digits


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> CompressionResult:
    config = CompressionConfig.model_validate(
        {
            "model": {"uri": "zoo://digits-mlp"},
            "pruning": [
                {"method": "structured", "sparsity": 0.5, "fineTuneEpochs": 3},
                {"method": "threshold"},
            ],
            "quantization": [
                {"method": "dynamic-int8"},
                {"method": "static-int8"},
                {"method": "uniform", "bits": 2},
            ],
            "distillation": {"student": {"width": 0.5}, "epochs": 15, "alpha": 0.7, "learningRate": 3e-3},
            "accuracyBudget": {"metric": "accuracy", "maxDrop": 0.01},
            "output": str(tmp_path_factory.mktemp("art") / "digits-1"),
            "name": "digits",
            "latencyRepeats": 1,
            "shardCounts": [1, 2, 3],
        }
    )
    return compress(config)


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_fp32_baseline_is_accurate_and_int8_is_four_times_smaller(result: CompressionResult) -> None:
    fp32, int8 = result.variant("fp32"), result.variant("int8-dynamic")
    assert fp32.score is not None and fp32.score.value >= 0.95
    assert int8.status == "kept" and int8.score is not None and int8.score.drop <= 0.01
    assert int8.size_bytes * 3 < fp32.size_bytes
    best = min((v for v in result.kept), key=lambda v: v.size_bytes)
    assert best.size_bytes * 4 <= fp32.size_bytes


def test_manifest_hashes_every_file_and_lists_kept_variants(result: CompressionResult) -> None:
    root = result.output
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["model"] == "digits" and manifest["generation"] == 1
    for relative, entry in manifest["files"].items():
        data = (root / relative).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["sizeBytes"]
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    names = {v["name"] for v in manifest["variants"]}
    assert names == {v.name for v in result.kept} and "fp32" in names
    assert artifact.verify(root) == []


def test_variant_files_run_with_the_declared_tensors(result: CompressionResult) -> None:
    manifest = json.loads((result.output / "manifest.json").read_text())
    x, y = digits.splits()["test"]
    for entry in manifest["variants"]:
        session = ort.InferenceSession(str(result.output / entry["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in entry["inputs"]]
        logits = session.run([entry["outputs"][0]["name"]], {"input": x})[0]
        accuracy = float((logits.argmax(1) == y).mean())
        # Dynamic INT8 scales activations per call, so one big batch may differ by a sample or two.
        assert accuracy == pytest.approx(entry["metric"]["value"], abs=0.005), entry["name"]


def test_over_budget_variant_is_dropped_with_its_reason(result: CompressionResult) -> None:
    two_bit = result.variant("uniform-2bit")
    assert two_bit.status == "dropped"
    assert two_bit.reason is not None and "exceeds maxDrop 0.0100" in two_bit.reason
    assert not (result.output / "variants" / "uniform-2bit").exists()
    report = json.loads((result.output / "report.json").read_text())
    row = next(r for r in report["variants"] if r["name"] == "uniform-2bit")
    assert row["status"] == "dropped" and row["reason"] == two_bit.reason


def test_structured_pruning_really_shrinks_the_matrices(result: CompressionResult) -> None:
    weights = initializers(result.output / "variants" / "pruned-structured-50" / "model.onnx")
    shapes = sorted(w.shape for w in weights.values() if w.ndim == 2)
    assert shapes == sorted([(128, 64), (64, 128), (10, 64)])
    assert result.variant("pruned-structured-50").size_bytes * 2.5 < result.variant("fp32").size_bytes


def test_threshold_pruning_zeroes_weights_below_the_mean_magnitude(result: CompressionResult) -> None:
    weights = initializers(result.output / "variants" / "pruned-threshold" / "model.onnx")
    teacher = digits.teacher()
    for name, tensor in teacher.state_dict().items():
        if not name.endswith("weight"):
            continue
        original = tensor.numpy()
        pruned = next(w for w in weights.values() if w.shape in (original.shape, original.T.shape))
        pruned = pruned if pruned.shape == original.shape else pruned.T
        below = np.abs(original) < np.abs(original).mean()
        assert np.all(pruned[below] == 0) and np.allclose(pruned[~below], original[~below])


def test_static_int8_is_qdq_and_distilled_student_is_narrow(result: CompressionResult) -> None:
    ops = {
        n.op_type
        for n in onnx.load(str(result.output / "variants" / "int8-static" / "model.onnx")).graph.node
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    student = initializers(result.output / "variants" / "student" / "model.onnx")
    assert max(max(w.shape) for w in student.values()) == 128
    assert result.variant("student").score is not None


def test_report_marks_chosen_variants_and_png_is_an_image(result: CompressionResult) -> None:
    report = json.loads((result.output / "report.json").read_text())
    kept = {r["name"] for r in report["variants"] if r["status"] == "kept"}
    assert set(report["chosen"].values()) <= kept and report["ranking"][0] in kept
    assert all(r["latency"]["batchSize"] == 32 for r in report["variants"] if r["status"] == "kept")
    assert (result.output / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_kept_variant_is_cut_into_verified_stage_files(result: CompressionResult) -> None:
    """Each shard count above 1 gets one ONNX file per stage, hashed in the manifest; the chain of
    those files answers like the variant on held-out rows at batch 1 and at another size."""
    root = result.output
    manifest = json.loads((root / "manifest.json").read_text())
    assert artifact.verify(root) == []
    x = digits.splits()["test"][0][:5]
    for entry in manifest["variants"]:
        assert [s["count"] for s in entry["stageSets"]] == [2, 3], entry["name"]
        whole = ort.InferenceSession(str(root / entry["file"]), providers=["CPUExecutionProvider"])
        for stage_set in entry["stageSets"]:
            files = [stage["file"] for stage in stage_set["stages"]]
            assert all(
                f in manifest["files"] and f.startswith(f"variants/{entry['name']}/stages-") for f in files
            )
            for rows in (x[:1], x):
                values = {whole.get_inputs()[0].name: rows}
                for stage in stage_set["stages"]:
                    session = ort.InferenceSession(
                        str(root / stage["file"]), providers=["CPUExecutionProvider"]
                    )
                    assert [i.name for i in session.get_inputs()] == [t["name"] for t in stage["inputs"]]
                    outputs = session.run(None, {t["name"]: values[t["name"]] for t in stage["inputs"]})
                    values = dict(zip([t["name"] for t in stage["outputs"]], outputs, strict=True))
                [expected] = whole.run(None, {whole.get_inputs()[0].name: rows})
                np.testing.assert_allclose(
                    values[whole.get_outputs()[0].name], expected, rtol=1e-4, atol=1e-4
                )
