"""``frugal compress`` from the command line: user mistakes give one line, exit 2, and no artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compression_support import assert_user_error, run_cli

from frugal.compression import artifact
from frugal.compression.formulas import apply_threshold_pruning
from frugal.compression.zoo import digits


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from frugal.compression.export import export_onnx
    from frugal.compression.zoo.digits import load

    source = load()
    assert source.module is not None
    return export_onnx(
        source.module,
        source.validation,
        source.inputs,
        source.outputs,
        tmp_path_factory.mktemp("m") / "m.onnx",
    )


def test_unknown_zoo_model(tmp_path: Path) -> None:
    assert_user_error(tmp_path / "a", "--model", "zoo://nope", mentions="digits-mlp")


def test_unreadable_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    np.savez(tmp_path / "v.npz", input=np.zeros((4, 64), np.float32))
    args = ("--model", f"file://{bad}", "--validation", str(tmp_path / "v.npz"))
    assert_user_error(tmp_path / "a", *args, "--quantization", "dynamic-int8", mentions="not a readable ONNX")


def test_data_with_the_wrong_input_name(tmp_path: Path, digits_onnx: Path) -> None:
    np.savez(tmp_path / "v.npz", pixels=np.zeros((4, 64), np.float32), labels=np.zeros(4, np.int64))
    args = ("--model", str(digits_onnx), "--validation", str(tmp_path / "v.npz"))
    assert_user_error(tmp_path / "a", *args, mentions="no array named 'input'")


def test_data_of_the_wrong_shape(tmp_path: Path, digits_onnx: Path) -> None:
    np.savez(tmp_path / "v.npz", input=np.zeros((4, 63), np.float32), labels=np.zeros(4, np.int64))
    args = ("--model", str(digits_onnx), "--validation", str(tmp_path / "v.npz"))
    assert_user_error(tmp_path / "a", *args, mentions="[4, 63]")


def test_impossible_budget(tmp_path: Path) -> None:
    args = ("--model", "zoo://digits-mlp", "--quantization", "dynamic-int8", "--min-value", "0.999")
    assert_user_error(tmp_path / "a", *args, mentions="minValue 0.999 is impossible")


def test_out_of_range_setting_names_the_field(tmp_path: Path) -> None:
    args = ("--model", "zoo://digits-mlp", "--config-json", json.dumps({"pruning": {"sparsity": 1.5}}))
    assert_user_error(tmp_path / "a", *args, mentions="pruning.0.sparsity")


def test_metric_that_does_not_fit_the_model(tmp_path: Path) -> None:
    assert_user_error(
        tmp_path / "a", "--model", "zoo://digits-mlp", "--metric", "cosine", mentions="accuracy"
    )


def test_onnx_file_with_npz_data_and_a_config_file(tmp_path: Path, digits_onnx: Path) -> None:
    x, y = digits.splits()["test"]
    np.savez(tmp_path / "v.npz", input=x, labels=y)
    config = {
        "model": {"uri": f"file://{digits_onnx}"},
        "data": {"validation": str(tmp_path / "v.npz")},
        "quantization": {"method": "dynamic-int8"},
        "latencyRepeats": 1,
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    out = tmp_path / "art"
    proc = run_cli(
        "--config", str(tmp_path / "c.json"), "--name", "digits", "--generation", "3", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation"] == 3 and {v["name"] for v in manifest["variants"]} == {
        "fp32",
        "int8-dynamic",
    }
    assert artifact.verify(out) == []


def test_threshold_rule_as_a_torch_pruning_method() -> None:
    layer = torch.nn.Linear(5, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1, 11, dtype=torch.float32).reshape(2, 5) / 10)
    apply_threshold_pruning(layer)
    assert int((layer.weight == 0).sum()) == 5
    assert hasattr(layer, "weight_mask")
