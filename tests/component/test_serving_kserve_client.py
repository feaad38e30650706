"""Conformance with KServe's own Python REST client (`kserve.InferenceRESTClient`, protocol v2), JSON
and binary tensors, unchanged.

Real parts: the `frugal serve` subprocess and KServe's SDK from PyPI, run from its own cached venv (its
pins conflict with the main environment's protobuf; see `serving_support.kserve_python`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
from serving_support import kserve_python, mlp, running_server, write_artifacts

CLIENT = Path(__file__).parent / "serving_clients" / "kserve_rest_client.py"


def test_kserve_rest_client_unchanged(tmp_path: Path) -> None:
    python = kserve_python()
    artifacts = write_artifacts(tmp_path / "a", "digits", {"fp32": mlp()})
    x = np.random.default_rng(5).random((3, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = ort.InferenceSession(str(artifacts / "variants/fp32/model.onnx")).run(None, {"input": x})[0]
    with running_server(artifacts, "fp32") as server:
        done = subprocess.run(
            [str(python), str(CLIENT), server.url, "digits", "input", "logits", str(tmp_path / "x.npy")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    for mode in ("json", "binary"):
        assert report[mode]["id"] == f"kserve-{mode == 'binary'}"
        assert report[mode]["shape"] == [3, 10]
        np.testing.assert_allclose(
            np.array(report[mode]["data"]).reshape(3, 10), expected, rtol=1e-5, atol=1e-6
        )
