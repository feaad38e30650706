"""all-MiniLM-L6-v2 (offline, from the installed package): plain INT8 breaks a cosine budget, the
per-channel / sensitivity fallback keeps it, and the artifact holds both outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from frugal.compression.config import CompressionConfig
from frugal.compression.pipeline import compress
from frugal.compression.zoo import minilm


def test_minilm_int8_falls_back_to_a_variant_within_the_cosine_budget(tmp_path: Path) -> None:
    config = CompressionConfig.model_validate(
        {
            "model": {"uri": "zoo://all-minilm-l6-v2"},
            "quantization": {"method": "dynamic-int8"},
            "accuracyBudget": {"maxDrop": 0.02},
            "output": str(tmp_path / "minilm"),
            "name": "minilm",
            "latencyRepeats": 1,
            "servingBatchSize": 8,
        }
    )
    result = compress(config)
    plain, fallback = result.variant("int8-dynamic"), result.variant("int8-dynamic-sensitive")
    assert plain.status == "dropped" and plain.score is not None and plain.score.value < 0.98
    assert fallback.status == "kept" and fallback.score is not None and fallback.score.value >= 0.98
    assert fallback.size_bytes * 3 < result.variant("fp32").size_bytes

    manifest = json.loads((result.output / "manifest.json").read_text())
    entry = next(v for v in manifest["variants"] if v["name"] == "int8-dynamic-sensitive")
    assert [i["datatype"] for i in entry["inputs"]] == ["INT64", "INT64"]
    session = ort.InferenceSession(str(result.output / entry["file"]), providers=["CPUExecutionProvider"])
    feed = minilm.tokenize(["A quiet morning by the lake.", "Servers need patches."])
    embeddings = session.run(None, feed)[0]
    assert embeddings.shape == (2, 384)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_minilm_weight_only_int8_is_a_quarter_of_the_size_within_a_tight_cosine_budget(
    tmp_path: Path,
) -> None:
    """Activations stay FP32, so only the weights' rounding moves the embeddings."""
    config = CompressionConfig.model_validate(
        {
            "model": {"uri": "zoo://all-minilm-l6-v2"},
            "quantization": [{"method": "int8-weight"}, {"method": "dynamic-int8", "fallback": False}],
            "accuracyBudget": {"maxDrop": 0.5},
            "output": str(tmp_path / "minilm"),
            "name": "minilm",
            "latencyRepeats": 1,
            "servingBatchSize": 8,
        }
    )
    result = compress(config)
    fp32, weight_only, dynamic = (result.variant(n) for n in ("fp32", "int8-weight", "int8-dynamic"))
    assert weight_only.status == "kept" and weight_only.score is not None
    assert weight_only.size_bytes <= 0.30 * fp32.size_bytes
    assert weight_only.score.value >= 0.995
    assert dynamic.score is not None and weight_only.score.value > dynamic.score.value

    graph = onnx.load(str(result.output / weight_only.file)).graph
    weights = {i.name for i in graph.initializer}
    assert {"MatMulNBits", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
