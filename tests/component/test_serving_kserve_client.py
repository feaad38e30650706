"""Conformance with KServe's own Python clients, unchanged: the REST client (`kserve.InferenceRESTClient`,
protocol v2; JSON and binary tensors) and the gRPC client (`kserve.InferenceGRPCClient`; typed and raw
contents).

Real parts: the `frugal serve` subprocess and KServe's SDK from PyPI, run from its own cached venv (its
pins conflict with the main environment's protobuf; see `serving_support.kserve_python`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from serving_support import kserve_python, mlp, running_server, write_artifacts

CLIENT = Path(__file__).parent / "serving_clients" / "kserve_rest_client.py"
GRPC_CLIENT = Path(__file__).parent / "serving_clients" / "kserve_grpc_client.py"


def run_kserve_client(
    script: Path, seed: int, tmp_path: Path, target: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """Serve a digits MLP, run KServe's client `script` against `target(server)`; its report and the
    runtime's own answer for the same input."""
    python = kserve_python()
    artifacts = write_artifacts(tmp_path / "a", "digits", {"fp32": mlp()})
    x = np.random.default_rng(seed).random((3, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = ort.InferenceSession(str(artifacts / "variants/fp32/model.onnx")).run(None, {"input": x})[0]
    with running_server(artifacts, "fp32") as server:
        done = subprocess.run(
            [str(python), str(script), target(server), "digits", "input", "logits", str(tmp_path / "x.npy")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert server.process.poll() is None
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    return report, expected


def assert_answers(report: dict[str, Any], expected: np.ndarray, ids: dict[str, str]) -> None:
    """Each mode's answer echoes its request id and matches the runtime's own output."""
    for mode, request_id in ids.items():
        assert report[mode]["id"] == request_id
        assert report[mode]["shape"] == [3, 10]
        np.testing.assert_allclose(
            np.array(report[mode]["data"]).reshape(3, 10), expected, rtol=1e-5, atol=1e-6
        )


def test_kserve_rest_client_unchanged(tmp_path: Path) -> None:
    report, expected = run_kserve_client(CLIENT, 5, tmp_path, lambda server: server.url)
    assert_answers(report, expected, {"json": "kserve-False", "binary": "kserve-True"})


def test_kserve_grpc_client_unchanged(tmp_path: Path) -> None:
    report, expected = run_kserve_client(GRPC_CLIENT, 6, tmp_path, lambda server: server.grpc_target)
    assert_answers(report, expected, {"typed": "kserve-grpc-False", "raw": "kserve-grpc-True"})
    assert report["error"]["code"] == "StatusCode.INVALID_ARGUMENT"
    assert "datatype FP64 but the model expects FP32" in report["error"]["details"]
