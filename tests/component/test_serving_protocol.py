"""`frugal serve` speaks the Open Inference Protocol v2: health, metadata, JSON and binary inference,
conformance with the unchanged `tritonclient.http`, 400s for bad input, and sha256 verification.

Real parts: the server is the real CLI in a subprocess on 127.0.0.1 running ONNX Runtime on a small
MLP built with onnx.helper; the clients are real HTTP clients.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import (
    Server,
    http,
    infer_json,
    metric_value,
    mlp,
    running_server,
    samples,
    serve_command,
    write_artifacts,
)

MODEL = "digits"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("artifacts"), MODEL, {"fp32": mlp()})


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    with running_server(
        artifacts, "fp32", "--max-body-bytes", "100000", "--labels", "namespace=ml,hardware_profile=cpu-small"
    ) as running:
        yield running


def reference(artifacts: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(artifacts / "variants/fp32/model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input": x})[0]


def test_health_and_metadata(server: Server) -> None:
    assert http("GET", f"{server.url}/v2/health/live").status == 200
    assert http("GET", f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert http("GET", f"{server.url}/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = http("GET", f"{server.url}/v2/models/{MODEL}").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert http("GET", f"{server.url}/v2/models/{MODEL}/ready").status == 200
    assert http("GET", f"{server.url}/v2/models/{MODEL}/versions/1/ready").status == 200
    missing = http("GET", f"{server.url}/v2/models/nope")
    assert missing.status == 404 and "serves 'digits'" in missing.json()["error"]


def test_json_inference_matches_onnxruntime(server: Server, artifacts: Path) -> None:
    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    reply = infer_json(server.url, MODEL, {"input": x}, id="req-7")
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["id"] == "req-7" and doc["model_name"] == MODEL
    [out] = doc["outputs"]
    assert out["name"] == "logits" and out["shape"] == [3, 10] and out["datatype"] == "FP32"
    np.testing.assert_allclose(
        np.array(out["data"]).reshape(3, 10), reference(artifacts, x), rtol=1e-5, atol=1e-6
    )


def test_nested_data_and_output_selection(server: Server) -> None:
    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.tolist()}],
        "outputs": [{"name": "logits"}],
    }
    reply = http("POST", f"{server.url}/v2/models/{MODEL}/infer", json.dumps(body).encode())
    assert reply.status == 200 and reply.json()["outputs"][0]["shape"] == [2, 10]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_unchanged(server: Server, artifacts: Path, binary: bool) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL)["name"] == MODEL
    x = np.random.default_rng(3).random((4, 64), dtype=np.float32)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(
        MODEL, [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)], request_id="t1"
    )
    assert result.get_response()["id"] == "t1"
    np.testing.assert_allclose(result.as_numpy("logits"), reference(artifacts, x), rtol=1e-5, atol=1e-6)


def test_tritonclient_sees_a_400_for_a_wrong_datatype(server: Server) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton.InferInput("input", [1, 64], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 64)))
    with pytest.raises(triton.InferenceServerException, match="datatype FP64 but the model expects FP32"):
        client.infer(MODEL, [tensor])


GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}
BAD_BODIES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("malformed JSON", b'{"inputs": [', {}, "not valid JSON"),
    ("not an object", b"[1, 2]", {}, "must be a JSON object"),
    ("no inputs", b"{}", {}, "'inputs' must be a non-empty list"),
    (
        "unknown tensor",
        json.dumps({"inputs": [{**GOOD, "name": "pixels"}]}).encode(),
        {},
        "unknown input 'pixels'",
    ),
    (
        "wrong datatype",
        json.dumps({"inputs": [{**GOOD, "datatype": "INT64", "data": [1] * 64}]}).encode(),
        {},
        "datatype INT64 but the model expects FP32",
    ),
    (
        "unknown datatype",
        json.dumps({"inputs": [{**GOOD, "datatype": "FLOAT"}]}).encode(),
        {},
        "unknown datatype",
    ),
    ("shape mismatch", json.dumps({"inputs": [{**GOOD, "shape": [2, 32]}]}).encode(), {}, "dim 1 must be 64"),
    ("rank mismatch", json.dumps({"inputs": [{**GOOD, "shape": [64]}]}).encode(), {}, "expects rank 2"),
    (
        "data length",
        json.dumps({"inputs": [{**GOOD, "data": [0.5] * 63}]}).encode(),
        {},
        "needs 64 elements, data has 63",
    ),
    (
        "strings as numbers",
        json.dumps({"inputs": [{**GOOD, "data": ["a"] * 64}]}).encode(),
        {},
        "must be numbers",
    ),
    (
        "ragged data",
        json.dumps({"inputs": [{**GOOD, "data": [[1.0], [1.0, 2.0]]}]}).encode(),
        {},
        "regularly nested",
    ),
    ("negative shape", json.dumps({"inputs": [{**GOOD, "shape": [-1, 64]}]}).encode(), {}, "non-negative"),
    (
        "unknown output",
        json.dumps({"inputs": [GOOD], "outputs": [{"name": "probs"}]}).encode(),
        {},
        "unknown output 'probs'",
    ),
    (
        "bad header length",
        json.dumps({"inputs": [GOOD]}).encode(),
        {"Inference-Header-Content-Length": "x"},
        "must be an integer",
    ),
    (
        "header past body",
        json.dumps({"inputs": [GOOD]}).encode(),
        {"Inference-Header-Content-Length": "99999"},
        "but the body has",
    ),
    (
        "binary size mismatch",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 64],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            }
        ).encode()
        + b"\0" * 8,
        {"Inference-Header-Content-Length": "-"},
        "needs 256 bytes, binary_data_size is 8",
    ),
]


@pytest.mark.parametrize(("case", "body", "headers", "message"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_input_gets_400_naming_the_problem(
    server: Server, case: str, body: bytes, headers: dict[str, str], message: str
) -> None:
    if headers.get("Inference-Header-Content-Length") == "-":
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    reply = http("POST", f"{server.url}/v2/models/{MODEL}/infer", body, headers)
    assert reply.status == 400, (case, reply.status, reply.body)
    assert message in reply.json()["error"], reply.json()


def test_oversized_body_gets_413(server: Server) -> None:
    reply = http("POST", f"{server.url}/v2/models/{MODEL}/infer", b"{" + b" " * 200_000 + b"}")
    assert reply.status == 413 and "--max-body-bytes" in reply.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", ""]) | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "nope"]) | json_values,
        "shape": st.lists(st.integers(-2, 70), max_size=3) | json_values,
        "data": st.lists(st.floats(width=32) | st.integers(-5, 5), max_size=70) | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 300)})
        | json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensors, max_size=2) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=7)}), max_size=2) | json_values,
        "id": st.text(max_size=4) | json_values,
        "parameters": json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=bodies, tail=st.binary(max_size=40), header=st.none() | st.integers(-5, 400).map(str))
def test_random_bodies_never_crash_the_server(
    server: Server, doc: object, tail: bytes, header: str | None
) -> None:
    body = json.dumps(doc).encode() + tail
    reply = http(
        "POST",
        f"{server.url}/v2/models/{MODEL}/infer",
        body,
        {"Inference-Header-Content-Length": header} if header is not None else {},
    )
    assert reply.status in (200, 400), (reply.status, reply.body)
    assert "error" in reply.json() or reply.status == 200


def test_metrics_after_traffic(server: Server, artifacts: Path) -> None:
    infer_json(server.url, MODEL, {"input": np.zeros((1, 64), np.float32)})
    text = http("GET", f"{server.url}/metrics").body.decode()
    labels = {
        "model": MODEL,
        "variant": "fp32",
        "namespace": "ml",
        "hardware_profile": "cpu-small",
        "shard": "0",
    }
    assert metric_value(text, "frugal_requests_total", code="200", **labels) >= 1
    assert metric_value(text, "frugal_requests_total", code="400", **labels) >= 1
    assert metric_value(text, "frugal_request_duration_seconds_count", **labels) >= 2
    assert (
        metric_value(text, "frugal_model_size_bytes", **labels)
        == (artifacts / "variants/fp32/model.onnx").stat().st_size
    )
    for name in ("frugal_queue_depth", "frugal_inflight_requests", "frugal_batch_size_count"):
        assert f"{name}{{" in text


def test_power_is_estimated_from_the_profile_watts(artifacts: Path) -> None:
    with running_server(artifacts, "fp32", env={"FRUGAL_IDLE_WATTS": "20", "FRUGAL_MAX_WATTS": "60"}) as srv:
        for _ in range(20):
            infer_json(srv.url, MODEL, {"input": np.zeros((8, 64), np.float32)})
        text = ""
        for _ in range(60):  # the power sampler ticks once a second
            text = http("GET", f"{srv.url}/metrics").body.decode()
            if sum(samples(text, "frugal_energy_joules_total", source="estimate")) > 0:
                break
            import time

            time.sleep(0.1)
    watts = metric_value(text, "frugal_power_watts", source="estimate")
    assert 20 <= watts <= 60
    assert metric_value(text, "frugal_energy_joules_total", source="estimate") >= 20 * 0.9
    assert samples(text, "frugal_power_watts", source="nvml") == []  # no GPU here: no NVML series at all


def test_refuses_a_variant_whose_sha256_does_not_match(tmp_path: Path) -> None:
    directory = write_artifacts(tmp_path / "a", MODEL, {"fp32": mlp()})
    model_file = directory / "variants/fp32/model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-1] + b"\x00")
    done = subprocess.run(serve_command(directory, "fp32"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # input it cannot use: every frugal command's code for that
    assert "sha256 of variants/fp32/model.onnx is" in done.stderr and "manifest says" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_settings_exit_2_with_a_message(tmp_path: Path) -> None:
    directory = write_artifacts(tmp_path / "a", MODEL, {"fp32": mlp()})
    unknown = subprocess.run(serve_command(directory, "int4"), capture_output=True, text=True, timeout=120)
    assert (
        unknown.returncode == 2 and "variant 'int4' is not in the manifest (variants: fp32)" in unknown.stderr
    )
    shards = subprocess.run(
        [*serve_command(directory, "fp32"), "--shard-count", "2"], capture_output=True, text=True, timeout=120
    )
    assert shards.returncode == 2 and "needs --next-stage URL" in shards.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "frugal.serving.server"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin"},
    )
    assert missing.returncode == 2 and "--artifacts (or FRUGAL_ARTIFACTS)" in missing.stderr


def test_an_unavailable_execution_provider_falls_back_to_cpu_and_says_so(artifacts: Path) -> None:
    with running_server(
        artifacts,
        "fp32",
        "--execution-provider",
        "TensorrtExecutionProvider",
        "--idle-watts",
        "5",
        "--max-watts",
        "9",
    ) as srv:
        meta = http("GET", f"{srv.url}/v2/models/{MODEL}").json()
        assert infer_json(srv.url, MODEL, {"input": np.zeros((1, 64), np.float32)}).status == 200
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider is not available in this ONNX Runtime build" in srv.stderr()
    assert "falling back to CPUExecutionProvider" in srv.stderr()


def test_a_file_that_is_not_onnx_is_refused_with_a_message(tmp_path: Path) -> None:
    directory = write_artifacts(tmp_path / "a", MODEL, {"fp32": mlp()})
    model_file = directory / "variants/fp32/model.onnx"
    model_file.write_bytes(b"not a model")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["variants/fp32/model.onnx"]["sha256"] = hashlib.sha256(b"not a model").hexdigest()
    manifest["files"]["variants/fp32/model.onnx"]["sizeBytes"] = len(b"not a model")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    done = subprocess.run(serve_command(directory, "fp32"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot load" in done.stderr and "as an ONNX model" in done.stderr
    assert "Traceback" not in done.stderr
