"""The ModelDeployment fields ``pruning.thresholdScale``, ``distillation.student.depthFactor`` and
``accuracyBudget.metric: f1``, from the config and the command line down to the variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from compression_support import assert_user_error
from onnx import numpy_helper
from pydantic import ValidationError
from sklearn.metrics import f1_score

from frugal.compression.compress_command import config_from_args, parser
from frugal.compression.config import (
    CompressionConfig,
    DistillationConfig,
    ModelSource,
    PruningConfig,
    StudentConfig,
)
from frugal.compression.errors import CompressionError
from frugal.compression.evaluate import Evaluator
from frugal.compression.pipeline import CompressionResult, compress
from frugal.compression.source import HeldOut
from frugal.compression.steps.distillation import kept_depth, make_student, student_layer_count
from frugal.compression.steps.pruning import sparsity, unstructured
from frugal.compression.zoo import digits

# --- pruning.thresholdScale -------------------------------------------------------------------


def threshold_sparsity(scale: float) -> float:
    return sparsity(unstructured(digits.teacher(), PruningConfig(method="threshold", threshold_scale=scale)))


def test_a_larger_threshold_scale_prunes_more_of_the_digits_mlp() -> None:
    half, seed, double = (threshold_sparsity(s) for s in (0.5, 1.0, 2.0))
    assert 0.0 < half < seed < double < 1.0
    assert seed == threshold_sparsity(PruningConfig().threshold_scale)  # the default is the seed's rule


def test_threshold_scale_zeroes_exactly_the_weights_below_scale_times_the_mean() -> None:
    teacher = digits.teacher()
    config = PruningConfig.model_validate({"method": "threshold", "thresholdScale": 1.7})
    pruned = unstructured(teacher, config).state_dict()
    for name, w in teacher.state_dict().items():
        if not name.endswith("weight"):
            continue
        p = pruned[name]
        below = w.abs() < 1.7 * w.abs().mean()
        assert bool(below.any()) and bool((~below).any())
        assert torch.all(p[below] == 0) and torch.equal(p[~below], w[~below])


@pytest.mark.parametrize("method", ["magnitude", "structured"])
def test_threshold_scale_on_another_method_names_the_field(method: str) -> None:
    with pytest.raises(ValidationError, match="thresholdScale"):
        PruningConfig.model_validate({"method": method, "thresholdScale": 2.0})
    # The operator always sends the CRD default, which stays harmless.
    assert PruningConfig.model_validate({"method": method, "thresholdScale": 1.0}).threshold_scale == 1.0


@pytest.mark.parametrize("scale", [0.0, -1.0, 100.5])
def test_threshold_scale_out_of_range(scale: float) -> None:
    with pytest.raises(ValidationError, match="thresholdScale"):
        PruningConfig.model_validate({"method": "threshold", "thresholdScale": scale})


def cli(*argv: str) -> CompressionConfig:
    return config_from_args(parser().parse_args(["--model", "zoo://digits-mlp", "--out", "/tmp/x", *argv]))


def test_threshold_scale_flag_goes_to_threshold_entries_only() -> None:
    config = cli("--pruning", "threshold", "--pruning", "magnitude:0.3", "--threshold-scale", "2.5")
    assert [(p.method, p.threshold_scale) for p in config.pruning] == [("threshold", 2.5), ("magnitude", 1.0)]
    assert cli("--pruning", "threshold").pruning[0].threshold_scale == 1.0


def test_threshold_scale_on_magnitude_in_the_config_is_a_user_error(tmp_path: Path) -> None:
    bad = json.dumps({"pruning": {"method": "magnitude", "thresholdScale": 3}})
    args = ("--model", "zoo://digits-mlp", "--config-json", bad)
    assert_user_error(tmp_path / "a", *args, mentions="thresholdScale applies only to method threshold")


# --- distillation.student.depthFactor ---------------------------------------------------------


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_a_digits_student_with_depth_factor_half_keeps_the_first_hidden_layer_only() -> None:
    source = digits.load()
    deep = make_student(source, DistillationConfig())
    shallow = make_student(source, DistillationConfig.model_validate({"student": {"depthFactor": 0.5}}))
    full = make_student(source, DistillationConfig.model_validate({"student": {"depthFactor": 1.0}}))
    assert len(linears(shallow)) < len(linears(deep)) == len(linears(full)) == len(digits.HIDDEN) + 1
    assert [tuple(m.weight.shape) for m in linears(shallow)] == [(128, 64), (10, 128)]
    assert shallow(torch.zeros(3, 64)).shape == (3, 10)


@pytest.mark.parametrize(
    ("teacher", "student", "expected"),
    [
        (6, {}, 3),  # half, the default
        (12, {}, 6),
        (6, {"layers": 4}, 4),
        (6, {"depthFactor": 0.5}, 3),
        (6, {"depthFactor": 1.0}, 6),
        (6, {"depthFactor": 0.1}, 1),  # at least one
        (12, {"depthFactor": 0.25}, 3),
        (12, {"depthFactor": 0.7}, 8),
        (2, {"depthFactor": 0.5}, 1),
    ],
)
def test_encoder_student_layer_count(teacher: int, student: dict[str, Any], expected: int) -> None:
    assert student_layer_count(teacher, StudentConfig.model_validate(student)) == expected


def test_mlp_depth_keeps_all_without_a_factor_and_at_least_one() -> None:
    assert [kept_depth(2, f) for f in (None, 1.0, 0.5, 0.2)] == [2, 2, 1, 1]
    assert [kept_depth(5, f) for f in (None, 0.6, 0.01)] == [5, 3, 1]


def test_student_layers_and_depth_factor_together_name_both() -> None:
    with pytest.raises(ValidationError, match=r"layers and student\.depthFactor"):
        StudentConfig.model_validate({"layers": 2, "depthFactor": 0.5})
    for bad in (0.0, 1.5):
        with pytest.raises(ValidationError, match="depthFactor"):
            StudentConfig.model_validate({"depthFactor": bad})
    assert StudentConfig.model_validate({"depth_factor": 0.5}).model_dump(by_alias=True)["depthFactor"] == 0.5


def test_student_depth_flag() -> None:
    config = cli("--distill", "--student-depth", "0.5")
    assert config.distillation is not None and config.distillation.student.depth_factor == 0.5
    with pytest.raises(CompressionError, match="depthFactor"):
        cli("--distill", "--student-depth", "0.5", "--student-layers", "2")
    # A flag replaces the config file's other depth setting instead of clashing with it.
    layered = json.dumps({"distillation": {"student": {"layers": 2}}})
    config = cli("--config-json", layered, "--student-depth", "0.5")
    assert config.distillation is not None
    assert (config.distillation.student.layers, config.distillation.student.depth_factor) == (None, 0.5)


# --- accuracyBudget.metric: f1, end to end (with a scaled threshold and a shallow student) -------


@pytest.fixture(scope="module")
def f1_result(tmp_path_factory: pytest.TempPathFactory) -> CompressionResult:
    config = cli(
        "--config-json",
        json.dumps({"distillation": {"epochs": 3}}),
        "--pruning",
        "threshold",
        "--threshold-scale",
        "2",
        "--quantization",
        "uniform:3",
        "--student-depth",
        "0.5",
        "--metric",
        "f1",
        "--max-drop",
        "1",
        "--repeats",
        "1",
        "--out",
        str(tmp_path_factory.mktemp("art") / "digits-f1"),
    )
    return compress(config)


def test_f1_scores_are_sklearn_macro_f1_of_each_variant_on_the_validation_data(
    f1_result: CompressionResult,
) -> None:
    x, y = digits.splits()["test"]
    names = {v.name for v in f1_result.variants}
    assert {"fp32", "pruned-threshold-200", "student", "uniform-3bit", "student-uniform-3bit"} <= names
    baseline = None
    values = []
    for variant in f1_result.variants:
        assert variant.status == "kept" and variant.score is not None
        session = ort.InferenceSession(
            str(f1_result.output / variant.file), providers=["CPUExecutionProvider"]
        )
        predicted = session.run(None, {"input": x})[0].argmax(axis=1)
        expected = f1_score(y, predicted, average="macro")
        assert variant.score.name == "f1"
        assert variant.score.value == pytest.approx(expected, abs=1e-9)
        if variant.name == "fp32":
            baseline = expected
        values.append(variant.score.value)
    assert baseline is not None
    for variant in f1_result.variants:
        assert variant.score is not None and variant.score.baseline == pytest.approx(baseline, abs=1e-9)
        assert variant.score.drop == pytest.approx(baseline - variant.score.value)
    assert len({round(v, 6) for v in values}) > 1  # not all the same model: the f1 really follows outputs
    report = json.loads((f1_result.output / "report.json").read_text())
    assert report["metric"] == "f1" and report["budget"]["metric"] == "f1"
    assert {r["metric"]["name"] for r in report["variants"]} == {"f1"}
    manifest = json.loads((f1_result.output / "manifest.json").read_text())
    assert {v["metric"]["name"] for v in manifest["variants"]} == {"f1"}


def initializers(path: Path) -> list[np.ndarray]:
    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]


def test_the_scaled_threshold_and_the_shallow_student_reach_the_onnx_variants(
    f1_result: CompressionResult,
) -> None:
    pruned = f1_result.variant("pruned-threshold-200")
    assert "pruning:threshold:0.5:scale=2" in pruned.steps
    matrices = [w for w in initializers(f1_result.output / pruned.file) if w.ndim == 2]
    zeros = sum(int((w == 0).sum()) for w in matrices) / sum(w.size for w in matrices)
    assert zeros == pytest.approx(threshold_sparsity(2.0), abs=1e-6) and zeros > threshold_sparsity(1.0)
    student = f1_result.variant("student")
    shapes = sorted(w.shape for w in initializers(f1_result.output / student.file) if w.ndim == 2)
    assert len(shapes) == 2 and max(max(s) for s in shapes) == 128


def test_f1_needs_labels(f1_result: CompressionResult) -> None:
    x, _ = digits.splits()["test"]
    with pytest.raises(CompressionError, match="metric f1 needs labels"):
        Evaluator.from_baseline(
            "f1", HeldOut({"input": x}), f1_result.output / f1_result.variant("fp32").file
        )


# --- spec.model.inputs / outputs ----------------------------------------------------------------


def test_a_declared_signature_is_checked_against_the_model_before_anything_is_built(tmp_path: Path) -> None:
    from frugal.compression.loaders import load_source
    from frugal.compression.pipeline import check_signature

    source = load_source(
        CompressionConfig.model_validate({"model": {"uri": "zoo://digits-mlp"}, "output": str(tmp_path)})
    )
    image = {"name": "input", "datatype": "FP32", "shape": [-1, 64]}

    def declared(**tensors: Any) -> ModelSource:
        return ModelSource.model_validate({"uri": "zoo://digits-mlp", **tensors})

    check_signature(
        source, declared(inputs=[image], outputs=[{"name": "logits", "datatype": "FP32", "shape": [4, 10]}])
    )
    check_signature(source, declared(inputs=[{"name": "input", "datatype": "FP32"}]))  # shape optional
    mistakes = {
        "model.inputs[0].name: the model has no input 'pixels' (its inputs: input)": {
            "inputs": [{**image, "name": "pixels"}]
        },
        "model.inputs[0].datatype: 'input' is FP32 in the model, not FP16": {
            "inputs": [{**image, "datatype": "FP16"}]
        },
        "model.outputs[0].shape: 'logits' has shape [-1, 10] in the model, not [-1, 12]": {
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 12]}]
        },
        "model.inputs[0].shape: 'input' has shape [-1, 64] in the model, not [64]": {
            "inputs": [{**image, "shape": [64]}]
        },
    }
    for message, tensors in mistakes.items():
        with pytest.raises(CompressionError) as error:
            check_signature(source, declared(**tensors))
        assert str(error.value).startswith(message), error.value
