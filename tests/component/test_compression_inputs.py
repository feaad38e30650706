"""Models that come as files other than ONNX: TorchScript archives, and PyTorch state dicts of a zoo
architecture (a pruned digits MLP, a 4-layer MiniLM student). Real torch and ONNX Runtime."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from compression_support import assert_user_error

from frugal.compression.builders import build_base
from frugal.compression.config import CompressionConfig
from frugal.compression.errors import CompressionError
from frugal.compression.loaders import load_source
from frugal.compression.pipeline import compress
from frugal.compression.plan import Base
from frugal.compression.source import SourceModel
from frugal.compression.steps.pruning import structured_mlp
from frugal.compression.zoo import digits


@pytest.fixture(scope="module")
def zoo_digits() -> SourceModel:
    return digits.load()


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory, zoo_digits: SourceModel) -> Path:
    path = tmp_path_factory.mktemp("data") / "validation.npz"
    assert zoo_digits.validation.labels is not None
    np.savez(path, input=zoo_digits.validation.inputs["input"], labels=zoo_digits.validation.labels)
    return path


@pytest.fixture(scope="module")
def digits_ts(tmp_path_factory: pytest.TempPathFactory, zoo_digits: SourceModel) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.ts"
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still what users hand us
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(zoo_digits.module).save(str(path))
    return path


def make_config(uri: Path | str, tmp_path: Path, **fields: Any) -> CompressionConfig:
    model = {"uri": str(uri), **fields.pop("model", {})}
    raw = {"model": model, "output": str(tmp_path / "artifact"), "latencyRepeats": 1, **fields}
    return CompressionConfig.model_validate(raw)


def assert_refused(config: CompressionConfig, *mentions: str) -> None:
    with pytest.raises(CompressionError) as info:
        load_source(config)
    message = str(info.value)
    assert "\n" not in message
    for mention in mentions:
        assert mention in message


def digits_state(zoo_digits: SourceModel) -> dict[str, torch.Tensor]:
    assert zoo_digits.module is not None
    return dict(zoo_digits.module.state_dict())


# --- TorchScript ----------------------------------------------------------------------------------


def test_torchscript_digits_compresses_with_dynamic_int8(
    tmp_path: Path, zoo_digits: SourceModel, digits_ts: Path, digits_npz: Path
) -> None:
    config = make_config(
        f"file://{digits_ts}",
        tmp_path,
        data={"validation": str(digits_npz)},
        quantization={"method": "dynamic-int8"},
    )
    result = compress(config)
    assert zoo_digits.module is not None and zoo_digits.validation.labels is not None
    x, y = zoo_digits.validation.inputs["input"], zoo_digits.validation.labels
    zoo_accuracy = digits.accuracy(zoo_digits.module, x, y)
    fp32, int8 = result.variant("fp32"), result.variant("int8-dynamic")
    assert fp32.score is not None and fp32.score.value == pytest.approx(zoo_accuracy, abs=1 / len(y))
    assert int8.status == "kept" and int8.score is not None
    assert abs(int8.score.value - zoo_accuracy) <= 0.01
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert manifest["source"] == f"file://{digits_ts}"
    entry = next(v for v in manifest["variants"] if v["name"] == "int8-dynamic")
    assert entry["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert entry["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]


def test_torchscript_with_pruning_is_refused_before_reading(tmp_path: Path, digits_ts: Path) -> None:
    config = make_config(digits_ts, tmp_path, pruning={"method": "structured"})
    assert_refused(config, "pruning:", "model.format: pytorch", "model.architecture")
    distilled = make_config(tmp_path / "absent.ts", tmp_path, distillation={})
    assert_refused(distilled, "distillation:")


def test_torchscript_with_pruning_exits_2_from_the_cli(
    tmp_path: Path, digits_ts: Path, digits_npz: Path
) -> None:
    args = ("--model", str(digits_ts), "--validation", str(digits_npz), "--pruning", "structured")
    assert_user_error(tmp_path / "a", *args, mentions="pruning:")


def test_torchscript_data_that_does_not_fit_names_the_data(tmp_path: Path, digits_ts: Path) -> None:
    np.savez(tmp_path / "v.npz", pixels=np.zeros((4, 63), np.float32), labels=np.zeros(4, np.int64))
    config = make_config(digits_ts, tmp_path, data={"validation": str(tmp_path / "v.npz")})
    assert_refused(config, "data.validation", "['pixels']")
    assert_refused(make_config(digits_ts, tmp_path), "data.validation is required")


# --- PyTorch state dicts of zoo architectures -------------------------------------------------------


def test_pruned_digits_state_dict_keeps_its_widths(tmp_path: Path, zoo_digits: SourceModel) -> None:
    assert zoo_digits.module is not None and zoo_digits.validation.labels is not None
    pruned = structured_mlp(zoo_digits.module, 0.5)  # type: ignore[arg-type]
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    x, y = zoo_digits.validation.inputs["input"][:200], zoo_digits.validation.labels[:200]
    np.savez(tmp_path / "v.npz", input=x, labels=y)
    config = make_config(
        tmp_path / "pruned.pt",
        tmp_path,
        model={"architecture": "digits-mlp"},
        data={"validation": str(tmp_path / "v.npz")},
        pruning={"method": "structured", "sparsity": 0.5},
    )
    source = load_source(config)
    assert source.family == "mlp" and source.uri == str(tmp_path / "pruned.pt")
    assert getattr(source.module, "hidden", None) == (128, 64)
    assert len(source.validation) == 200 and source.train is not None

    result = compress(config)
    fp32, pruned_again = result.variant("fp32"), result.variant("pruned-structured-50")
    assert fp32.score is not None and fp32.score.value == digits.accuracy(pruned, x, y)
    assert 0 < pruned_again.size_bytes < fp32.size_bytes * 0.4


def test_minilm_student_with_four_layers_and_pruned_ffn(tmp_path: Path) -> None:
    from frugal.compression.steps.transformer import keep_layers, structured_bert
    from frugal.compression.zoo import minilm

    student = structured_bert(keep_layers(minilm.teacher(), 4, [0, 2, 3, 5]), 0.25)
    state = student.state_dict()
    del state["bert.embeddings.word_embeddings.weight"]  # a student that froze them ships without
    torch.save(state, tmp_path / "student.pt")
    config = make_config(
        f"file://{tmp_path / 'student.pt'}",
        tmp_path,
        model={"format": "pytorch", "architecture": "all-minilm-l6-v2"},
    )
    source = load_source(config)
    module: Any = source.module
    assert source.family == "bert" and module is not None
    layers = module.bert.encoder.layer
    assert len(layers) == 4 and layers[0].intermediate.dense.out_features == 1152  # 1536 * 0.75

    path = build_base(Base("fp32", ()), source, config, tmp_path / "student.onnx")
    rows = {name: array[:4] for name, array in source.validation.inputs.items()}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embeddings = session.run(None, rows)[0]
    with torch.no_grad():
        expected = student.eval()(*(torch.from_numpy(rows[s.name]) for s in source.inputs)).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)


def test_unknown_or_missing_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    unknown = make_config(tmp_path / "m.pt", tmp_path, model={"architecture": "resnet50"})
    assert_refused(unknown, "model.architecture 'resnet50' is unknown", "digits-mlp", "all-minilm-l6-v2")
    missing = make_config(tmp_path / "m.bin", tmp_path, model={"format": "pytorch"})
    assert_refused(missing, "model.architecture is missing", "digits-mlp")
    assert_refused(make_config(tmp_path / "m.bin", tmp_path), "model.format", "pytorch")
    onnx_with_architecture = make_config(tmp_path / "m.onnx", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(onnx_with_architecture, "model.architecture applies only")


def test_unknown_architecture_exits_2_from_the_cli(tmp_path: Path) -> None:
    settings = json.dumps({"model": {"architecture": "resnet50"}})
    args = ("--model", str(tmp_path / "m.pt"), "--config-json", settings)
    assert_user_error(tmp_path / "a", *args, mentions="model.architecture 'resnet50' is unknown")


def test_state_dict_with_an_unexpected_key(tmp_path: Path, zoo_digits: SourceModel) -> None:
    state = {**digits_state(zoo_digits), "extra.weight": torch.zeros(3, 3)}
    torch.save(state, tmp_path / "m.pt")
    config = make_config(tmp_path / "m.pt", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(config, "model.uri", "'extra.weight'", "model.architecture")


def test_state_dict_with_a_mismatched_shape(tmp_path: Path, zoo_digits: SourceModel) -> None:
    state = {**digits_state(zoo_digits), "0.weight": torch.zeros(256, 63)}
    torch.save(state, tmp_path / "m.pt")
    config = make_config(tmp_path / "m.pt", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(config, "model.uri", "'0.weight'", "[256, 63]", "[256, 64]")


def test_state_dict_missing_a_digits_layer(tmp_path: Path, zoo_digits: SourceModel) -> None:
    state = digits_state(zoo_digits)
    del state["2.bias"]
    torch.save(state, tmp_path / "m.pt")
    config = make_config(tmp_path / "m.pt", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(config, "model.uri", "lacks '2.bias'")


def test_unreadable_or_wrong_kind_of_state_dict(tmp_path: Path, digits_ts: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = make_config(tmp_path / "junk.pt", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(junk, "model.uri", "is not a state dict", "torch.save")
    torchscript = make_config(digits_ts, tmp_path, model={"format": "pytorch", "architecture": "digits-mlp"})
    assert_refused(torchscript, "model.uri", "model.format: torchscript")
    absent = make_config(tmp_path / "absent.pt", tmp_path, model={"architecture": "digits-mlp"})
    assert_refused(absent, "model.uri: no such file")


# --- .parquet data --------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_validation_data_scores_like_the_same_rows_in_npz(
    tmp_path: Path, zoo_digits: SourceModel, digits_ts: Path, digits_npz: Path
) -> None:
    import pyarrow as pa

    rows = zoo_digits.validation.inputs["input"]
    assert zoo_digits.validation.labels is not None
    parquet = write_parquet(
        tmp_path / "validation.parquet",
        {"input": pa.array(list(rows), type=pa.list_(pa.float32())), "labels": zoo_digits.validation.labels},
    )
    scores = {}
    for name, data in (("npz", digits_npz), ("parquet", parquet)):
        config = make_config(
            digits_ts,
            tmp_path / name,
            data={"validation": str(data)},
            quantization={"method": "dynamic-int8"},
        )
        source = load_source(config)
        assert source.inputs[0].datatype == "FP32" and source.inputs[0].shape == (-1, 64)
        result = compress(config)
        scores[name] = {v.name: v.score.value for v in result.variants if v.score is not None}
    assert scores["parquet"] == scores["npz"] and "int8-dynamic" in scores["parquet"]


def test_parquet_with_ragged_rows_or_missing_values_names_the_column(tmp_path: Path, digits_ts: Path) -> None:
    import pyarrow as pa

    ragged = write_parquet(
        tmp_path / "ragged.parquet",
        {"input": pa.array([[0.0] * 64, [0.0] * 63], type=pa.list_(pa.float32()))},
    )
    config = make_config(digits_ts, tmp_path, data={"validation": str(ragged)})
    assert_refused(config, "data.validation", "'input'", "one shape")
    holes = write_parquet(
        tmp_path / "holes.parquet", {"input": pa.array([[0.0] * 64, None], type=pa.list_(pa.float32()))}
    )
    assert_refused(
        make_config(digits_ts, tmp_path, data={"validation": str(holes)}), "'input'", "missing values"
    )
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    assert_refused(
        make_config(digits_ts, tmp_path, data={"validation": str(tmp_path / "junk.parquet")}), "cannot read"
    )


# --- URIs: pvc:// under FRUGAL_PVC_ROOT, anything else through fsspec -----------------------------


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory, zoo_digits: SourceModel, digits_npz: Path) -> Path:
    """A folder holding models/digits.onnx and data/validation.npz."""
    from frugal.compression.export import export_onnx

    root = tmp_path_factory.mktemp("served")
    assert zoo_digits.module is not None
    export_onnx(
        zoo_digits.module,
        zoo_digits.validation,
        zoo_digits.inputs,
        zoo_digits.outputs,
        root / "models" / "digits.onnx",
    )
    (root / "data").mkdir()
    (root / "data" / "validation.npz").write_bytes(digits_npz.read_bytes())
    return root


@pytest.fixture(scope="module")
def http_root(digits_files: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving ``digits_files``."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(digits_files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_model_and_data_over_http_are_fetched_and_compressed(
    tmp_path: Path, http_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUGAL_CACHE_DIR", str(tmp_path / "cache"))
    config = make_config(
        f"{http_root}/models/digits.onnx",
        tmp_path,
        data={"validation": f"{http_root}/data/validation.npz"},
        quantization={"method": "dynamic-int8"},
    )
    result = compress(config)
    assert result.variant("fp32").score is not None and result.variant("fp32").score.value > 0.95
    assert result.variant("int8-dynamic").status == "kept"
    missing = make_config(
        f"{http_root}/models/nope.onnx", tmp_path, data={"validation": f"{http_root}/x.npz"}
    )
    assert_refused(missing, "model.uri", "cannot fetch", "nope.onnx")
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_pvc_uris_resolve_under_the_mounted_claims(
    tmp_path: Path, digits_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(
        "pvc://models/digits.onnx", tmp_path, data={"validation": "pvc://data/validation.npz"}
    )
    monkeypatch.delenv("FRUGAL_PVC_ROOT", raising=False)
    assert_refused(config, "model.uri", "FRUGAL_PVC_ROOT")
    monkeypatch.setenv("FRUGAL_PVC_ROOT", str(digits_files))
    source = load_source(config)
    assert source.onnx_path == digits_files / "models" / "digits.onnx"
    assert len(source.validation) == len(digits.load().validation)


def test_a_scheme_without_a_backend_names_the_field_and_the_backend() -> None:
    config = CompressionConfig.model_validate(
        {"model": {"uri": "nosuchstore://bucket/m.onnx"}, "data": {"validation": "x.npz"}, "output": "/tmp/x"}
    )
    assert_refused(config, "model.uri", "nosuchstore://", "fsspec backend")


def test_max_samples_keeps_the_first_rows_and_zoo_data_can_be_named(tmp_path: Path, digits_ts: Path) -> None:
    config = make_config(
        digits_ts,
        tmp_path,
        data={
            "validation": "zoo://digits-mlp",
            "validationMaxSamples": 100,
            "calibrationMaxSamples": 7,
            "calibration": "zoo://digits-mlp",
        },
    )
    source = load_source(config)
    zoo_data = digits.load()
    assert len(source.validation) == 100 and len(source.calibration) == 7
    assert np.array_equal(source.validation.inputs["input"], zoo_data.validation.inputs["input"][:100])
    assert not np.array_equal(source.calibration.inputs["input"], zoo_data.validation.inputs["input"][:7])
    assert_refused(
        make_config(digits_ts, tmp_path, data={"validation": "zoo://nope"}), "data.validation", "digits-mlp"
    )
