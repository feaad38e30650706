"""Serving benchmark: raw ONNX Runtime in-process (the limit) vs `frugal serve` vs two peer servers.

Every server answers the same ONNX file over the Open Inference Protocol v2, in three encodings:
  * REST JSON: tensors as JSON numbers both ways (aiohttp, keep-alive)
  * REST binary: the binary tensor extension both ways (`Inference-Header-Content-Length`)
  * gRPC: `raw_input_contents` in, raw outputs back (`tritonclient.grpc.aio`, one HTTP/2 channel)
and one load generator per protocol drives every server the same way:
  * saturation: `--concurrency` closed-loop clients for `--duration` seconds → requests/s
  * fixed rate: open-loop arrivals at the workload's rate → p50 / p99 latency
  * one client: back-to-back requests with a lean client (`http.client`; a gRPC stub with a prebuilt
    message), the low-load latency
  * CPU per request: user+system CPU time of the server's process tree / requests answered
The raw runtime rows loop `session.run` on one thread at batch 1 and at the mean batch size frugal
reached under saturation on each protocol (read from `frugal_batch_size`), with the same intra-op
threads as the servers.

Peers, each in a venv of its own (their pins clash with frugal's) and each running the same ONNX file
in ONNX Runtime from a small custom model class, as a user of that server would write it:
  * KServe's Python ModelServer (`--kserve-python`): a `kserve.Model`, REST and gRPC
  * Seldon's MLServer (`--mlserver-python`): an `mlserver.MLModel`, REST and gRPC; MLServer has no
    REST binary extension. `--mlserver-workers` sets its `parallel_workers` (see BENCHMARKS.md)

    python benchmarks/serving.py                          # digits + MiniLM INT8, frugal vs raw
    python benchmarks/serving.py --kserve-python K/bin/python --mlserver-python M/bin/python
    python benchmarks/serving.py --kserve-python auto --mlserver-python auto   # venvs from the locks
    python benchmarks/serving.py --forward-probe          # REST binary vs gRPC stage-to-stage hop
    python benchmarks/serving.py --smoke                  # seconds: digits, frugal vs raw, to see it runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CACHE = Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "benchmarks"
REST_JSON, REST_BINARY, GRPC = "REST JSON", "REST binary", "gRPC"
PROTOCOLS = (REST_JSON, REST_BINARY, GRPC)
OIP_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


# ------------------------------------------------------------------------------------------------ models


def digits_int8() -> Path:
    """The digits-mlp architecture (64→256→128→10) with fixed random weights, dynamic INT8."""
    target = CACHE / "digits-mlp-int8.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    sizes = (64, 256, 128, 10)
    nodes, inits, current = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        inits += [
            numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        out = "logits" if i == len(sizes) - 2 else f"h{i}"
        nodes += [
            helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out if out == "logits" else f"g{i}"])
        ]
        if out != "logits":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    fp32 = CACHE / "digits-mlp-fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
    return target


def minilm_int8() -> Path:
    """all-MiniLM-L6-v2 from the offline package, exported with torch, dynamic INT8."""
    target = CACHE / "minilm-l6-v2-int8-v2.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from frugal.compression.zoo.minilm import export_token_encoder

    fp32 = export_token_encoder(CACHE / "minilm-l6-v2-fp32-v2.onnx")
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
    return target


@dataclass(frozen=True)
class Workload:
    name: str
    path: Path
    feeds: dict[str, np.ndarray]  # one request's tensors
    rate: float  # req/s for the fixed-rate phase


def workloads(names: list[str], seq: int) -> list[Workload]:
    rng = np.random.default_rng(0)
    found = []
    if "digits" in names:
        found.append(
            Workload("digits", digits_int8(), {"input": rng.random((1, 64), dtype=np.float32)}, 200.0)
        )
    if "minilm" in names:
        ids = rng.integers(1000, 20000, (1, seq))
        found.append(
            Workload("minilm", minilm_int8(), {"input_ids": ids, "attention_mask": np.ones_like(ids)}, 20.0)
        )
    return found


def artifacts_for(workload: Workload) -> Path:
    """An artifact directory with the workload's model as its one variant, its manifest complete per
    the artifact contract (what compression writes; no metric or latency: nothing measured them)."""
    from frugal.serving.datatypes import ONNX_TO_OIP

    directory = CACHE / f"artifacts-{workload.name}"
    relative = "variants/int8-dynamic/model.onnx"
    model = directory / relative
    model.parent.mkdir(parents=True, exist_ok=True)
    data = workload.path.read_bytes()
    model.write_bytes(data)
    graph = onnx.load_from_string(data).graph

    def specs(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "datatype": ONNX_TO_OIP[v.type.tensor_type.elem_type],
                "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    initializers = {i.name for i in graph.initializer}
    manifest = {
        "schemaVersion": 2,
        "model": workload.name,
        "generation": 1,
        "source": "benchmark",
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {relative: {"sha256": hashlib.sha256(data).hexdigest(), "sizeBytes": len(data)}},
        "variants": [
            {
                "name": "int8-dynamic",
                "file": relative,
                "steps": ["quantization:dynamic-int8"],
                "inputs": specs(v for v in graph.input if v.name not in initializers),
                "outputs": specs(graph.output),
                "sizeBytes": len(data),
                "metric": None,
                "latency": None,
            }
        ],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


# ------------------------------------------------------------------------------------------ encodings


@dataclass(frozen=True)
class Encoded:
    body: bytes
    headers: dict[str, str]


def rest_request(feeds: dict[str, np.ndarray], protocol: str) -> Encoded:
    """One request's REST body: tensors as JSON numbers, or the binary extension both ways."""
    if protocol == REST_BINARY:
        tensors = [
            {"name": n, "datatype": OIP_TYPES[a.dtype], "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
            for n, a in feeds.items()
        ]  # fmt: skip
        header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return Encoded(header + b"".join(a.tobytes() for a in feeds.values()), headers)
    doc = {
        "inputs": [
            {"name": n, "datatype": OIP_TYPES[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in feeds.items()
        ]
    }
    return Encoded(json.dumps(doc).encode(), {"Content-Type": "application/json"})


# ------------------------------------------------------------------------------------------------ raw


def raw_throughput(workload: Workload, batch: int, threads: int, seconds: float) -> tuple[float, float]:
    """(requests/s at `batch` requests per run, median ms of one batch-1 run) in-process."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(workload.path), options, providers=["CPUExecutionProvider"])
    merged = {n: np.repeat(a, batch, axis=0) for n, a in workload.feeds.items()}
    for _ in range(5):
        session.run(None, merged)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, merged)
        runs += 1
    rate = runs * batch / (time.perf_counter() - start)
    single = []
    for _ in range(200 if workload.name == "digits" else 30):
        t = time.perf_counter()
        session.run(None, workload.feeds)
        single.append((time.perf_counter() - t) * 1000)
    return rate, statistics.median(single)


# ------------------------------------------------------------------------------------------- servers


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    base: str  # http://host:port
    model: str
    grpc_target: str | None = None  # host:port where the server speaks OIP gRPC
    protocols: tuple[str, ...] = PROTOCOLS
    scratch: list[Path] = field(default_factory=list)  # removed on stop

    @property
    def url(self) -> str:
        return f"{self.base}/v2/models/{self.model}/infer"

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for path in self.scratch:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of a process and its live descendants (MLServer's inference workers)."""
    stats: dict[int, tuple[int, int]] = {}  # pid → (parent pid, clock ticks)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def wait_grpc(target: str, timeout: float = 60) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def wait_line(
    path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 60
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before printing {pattern!r}")
        time.sleep(0.1)
    raise RuntimeError(f"no line matching {pattern!r} in {timeout} s")


def start_frugal(workload: Workload, port: int, threads: int, batch: int) -> Running:
    directory = artifacts_for(workload)
    command = [
        sys.executable, "-m", "frugal.serving.server", "--artifacts", str(directory), "--variant", "int8-dynamic",
        "--port", str(port), "--intra-op-threads", str(threads), "--max-batch-size", str(batch),
        "--log-level", "WARNING", "--grpc-port", "0",
    ]  # fmt: skip
    handle, name = tempfile.mkstemp(prefix="frugal-bench-serve-", suffix=".out")
    printed = Path(name)
    with os.fdopen(handle, "wb") as stdout:
        process = subprocess.Popen(command, stdout=stdout)
    server = Running(process, f"http://127.0.0.1:{port}", workload.name, scratch=[printed])
    wait_http(f"{server.base}/v2/health/ready", process)
    grpc_port = wait_line(printed, r"frugal serve: grpc on \S+:(\d+)", process).group(1)
    server.grpc_target = f"127.0.0.1:{grpc_port}"
    wait_grpc(server.grpc_target)
    return server


KSERVE_MODEL = textwrap.dedent('''
    """A KServe ModelServer serving one ONNX file with ONNX Runtime (the benchmark's peer)."""
    import logging
    import sys
    import onnxruntime as ort
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import from_np_dtype

    class OnnxModel(kserve.Model):
        def __init__(self, name, path, threads):
            super().__init__(name)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.ready = True

        def predict(self, payload: InferRequest, headers=None):
            # as kserve.utils.utils.get_predict_response: binary outputs when the request asks
            # (REST binary_data_output; gRPC raw_input_contents), numbers otherwise
            feeds = {i.name: i.as_numpy() for i in payload.inputs}
            values = self.session.run(self.outputs, feeds)
            binary = payload.use_binary_outputs
            outputs = []
            for name, value in zip(self.outputs, values):
                out = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
                out.set_data_from_numpy(value, binary_data=binary)
                outputs.append(out)
            return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or "-",
                                 use_binary_outputs=binary)

    if __name__ == "__main__":
        name, path, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        # as frugal: no line per request (uvicorn's access log, the REST timing middleware's trace,
        # the gRPC interceptor's "grpc method:"); errors still log
        logging.getLogger("uvicorn.access").addFilter(lambda record: False)
        logging.getLogger("kserve.trace").addFilter(lambda record: False)
        logging.getLogger("kserve").addFilter(lambda record: not record.getMessage().startswith("grpc method:"))
        kserve.ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=True,
                           enable_latency_logging=False).start([OnnxModel(name, path, threads)])
''')


def start_kserve(workload: Workload, port: int, threads: int, python: str) -> Running:
    script = Path(tempfile.gettempdir()) / "frugal-bench-kserve-model.py"
    script.write_text(KSERVE_MODEL)
    process = subprocess.Popen(
        [python, str(script), workload.name, str(workload.path), str(port), str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Running(process, f"http://127.0.0.1:{port}", workload.name, f"127.0.0.1:{port + 1}")
    wait_http(f"{server.base}/v2/models/{workload.name}/ready", process)
    wait_grpc(f"127.0.0.1:{port + 1}")
    return server


MLSERVER_MODEL = textwrap.dedent('''
    """An MLServer runtime serving one ONNX file with ONNX Runtime (the benchmark's second peer)."""
    import onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse


    class OnnxModel(MLModel):
        async def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = int(self.settings.parameters.extra["threads"])
            self.session = ort.InferenceSession(
                self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
            )
            self.output_names = [o.name for o in self.session.get_outputs()]  # MLModel.outputs: metadata
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            # as MLServer's own runtimes (mlserver-sklearn, -xgboost): the codec decodes, the runtime
            # runs in predict; gRPC answers raw_output_contents when the request sent raw inputs
            feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
            values = self.session.run(self.output_names, feeds)
            outputs = [NumpyCodec.encode_output(n, v) for n, v in zip(self.output_names, values)]
            return InferenceResponse(model_name=self.name, outputs=outputs)
''')


def start_mlserver(workload: Workload, port: int, threads: int, python: str, workers: int) -> Running:
    """`mlserver start DIR` with settings.json + model-settings.json (ports: HTTP, gRPC, metrics)."""
    directory = Path(tempfile.mkdtemp(prefix="frugal-bench-mlserver-"))
    (directory / "onnx_peer.py").write_text(MLSERVER_MODEL)
    settings = {
        "host": "127.0.0.1", "http_port": port, "grpc_port": port + 1, "metrics_port": port + 2,
        "parallel_workers": workers, "debug": False,  # debug=False: no access log (as frugal and KServe here)
        "gzip_enabled": False,  # frugal and KServe answer uncompressed; aiohttp would ask for gzip
        "metrics_dir": str(directory / ".metrics"), "environments_dir": str(directory / ".envs"),
    }  # fmt: skip
    model = {
        "name": workload.name,
        "implementation": "onnx_peer.OnnxModel",
        "parameters": {"uri": str(workload.path), "extra": {"threads": threads}},
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model-settings.json").write_text(json.dumps(model))
    process = subprocess.Popen(
        [str(Path(python).parent / "mlserver"), "start", str(directory)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Running(process, f"http://127.0.0.1:{port}", workload.name, f"127.0.0.1:{port + 1}")
    server.protocols, server.scratch = (REST_JSON, GRPC), [directory]  # no REST binary extension
    wait_http(f"{server.base}/v2/models/{workload.name}/ready", process)
    wait_grpc(server.grpc_target or "")
    return server


# ----------------------------------------------------------------------------------------- load

Call = Callable[[], Awaitable[bool]]  # one request; True when answered with success


@contextlib.asynccontextmanager
async def rest_client(server: Running, request: Encoded, connections: int) -> AsyncIterator[Call]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def call() -> bool:
            async with session.post(server.url, data=request.body, headers=request.headers) as reply:
                await reply.read()
                return reply.status == 200

        yield call


@contextlib.asynccontextmanager
async def grpc_client(server: Running, feeds: dict[str, np.ndarray]) -> AsyncIterator[Call]:
    """tritonclient's asyncio client: one channel (HTTP/2 multiplexes the concurrent calls)."""
    from tritonclient.grpc import aio as triton

    client = triton.InferenceServerClient(server.grpc_target or "")
    inputs = []
    for name, array in feeds.items():
        tensor = triton.InferInput(name, list(array.shape), OIP_TYPES[array.dtype])
        tensor.set_data_from_numpy(array)  # raw_input_contents
        inputs.append(tensor)

    async def call() -> bool:
        await client.infer(server.model, inputs)
        return True

    try:
        yield call
    finally:
        await client.close()


def client_for(server: Running, workload: Workload, protocol: str, connections: int) -> Any:
    if protocol == GRPC:
        return grpc_client(server, workload.feeds)
    return rest_client(server, rest_request(workload.feeds, protocol), connections)


async def closed_loop(
    server: Running, workload: Workload, protocol: str, concurrency: int, seconds: float
) -> tuple[int, int]:
    done = errors = 0
    async with client_for(server, workload, protocol, concurrency) as call:
        stop = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                try:
                    answered = await call()
                except Exception:  # a gRPC error status, a dropped connection: counted, not fatal
                    answered = False
                done, errors = done + answered, errors + (not answered)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, errors


async def open_loop(server: Running, workload: Workload, protocol: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with client_for(server, workload, protocol, 256) as call:

        async def one() -> None:
            start = time.perf_counter()
            with contextlib.suppress(Exception):
                if await call():
                    latencies.append((time.perf_counter() - start) * 1000)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(workload.rate * seconds)):
            delay = begin + i / workload.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return latencies


@contextlib.contextmanager
def lean_sender(server: Running, workload: Workload, protocol: str) -> Iterator[Callable[[], object]]:
    """A blocking one-request function with little client work: a prebuilt body or message."""
    if protocol == GRPC:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        message = service_pb2.ModelInferRequest(model_name=server.model)
        for name, array in workload.feeds.items():
            tensor = message.inputs.add(name=name, datatype=OIP_TYPES[array.dtype])
            tensor.shape.extend(array.shape)
            message.raw_input_contents.append(array.tobytes())
        with grpc.insecure_channel(server.grpc_target or "") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            yield lambda: stub.ModelInfer(message)
        return
    import http.client
    from urllib.parse import urlsplit

    parts, request = urlsplit(server.url), rest_request(workload.feeds, protocol)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)

    def send() -> bytes:
        connection.request("POST", parts.path, request.body, request.headers)
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {body[:200]!r}")
        return body

    try:
        yield send
    finally:
        connection.close()


def one_client_p50(server: Running, workload: Workload, protocol: str, count: int) -> float:
    """Median ms of back-to-back requests on one connection (a lean client: low load)."""
    latencies = []
    with lean_sender(server, workload, protocol) as send:
        for _ in range(10):  # a fresh connection, and whatever the saturation phase left queued
            send()
        for _ in range(count):
            start = time.perf_counter()
            send()
            latencies.append((time.perf_counter() - start) * 1000)
    return statistics.median(latencies)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


NAN = float("nan")


@dataclass(frozen=True)
class Row:
    model: str
    server: str  # frugal, kserve, mlserver, or one of the RAW_* rows
    protocol: str
    throughput: float
    p50: float = NAN
    p99: float = NAN
    cpu_ms: float = NAN
    one_client: float = NAN
    batch: float = NAN  # frugal: mean requests per runtime execution under saturation; raw: its batch
    note: str = ""


RAW_AT_BATCH, RAW_ONE = "raw ORT, frugal's batch", "raw ORT, batch 1"


def measure(server: Running, workload: Workload, name: str, protocol: str, args: argparse.Namespace) -> Row:
    asyncio.run(closed_loop(server, workload, protocol, 4, 1.0))  # warm-up
    metrics = f"{server.base}/metrics"
    batches0, cpu0 = batch_counts(metrics), server.cpu_seconds()
    done, errors = asyncio.run(closed_loop(server, workload, protocol, args.concurrency, args.duration))
    cpu, batches1 = server.cpu_seconds() - cpu0, batch_counts(metrics)
    batches = batches1[1] - batches0[1]
    mean_batch = (batches1[0] - batches0[0]) / batches if batches > 0 else NAN
    latencies = asyncio.run(open_loop(server, workload, protocol, args.duration))
    one = one_client_p50(server, workload, protocol, 300 if workload.name == "digits" else 120)
    return Row(
        workload.name,
        name,
        protocol,
        done / args.duration,
        percentile(latencies, 50),
        percentile(latencies, 99),
        cpu / max(done, 1) * 1000,
        one,
        mean_batch,
        f"{errors} errors" if errors else "",
    )


def batch_counts(metrics_url: str) -> tuple[float, float]:
    """(requests batched, batches) so far, from frugal's batch-size histogram; zeros for other servers."""
    try:
        with urllib.request.urlopen(metrics_url) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0, 0.0
    total = sum(float(v) for v in re.findall(r"^frugal_batch_size_sum\{.*\} (\S+)$", text, re.M))
    count = sum(float(v) for v in re.findall(r"^frugal_batch_size_count\{.*\} (\S+)$", text, re.M))
    return total, count


# ------------------------------------------------------------------------------------------- runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, every server and raw")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--seq", type=int, default=32, help="MiniLM tokens per request")
    parser.add_argument(
        "--kserve-python", help="python of a venv with kserve (a peer); auto: build it from its lock, cached"
    )
    parser.add_argument(
        "--mlserver-python", help="python of a venv with mlserver (a peer); auto: build it from its lock, cached"
    )
    parser.add_argument(
        "--mlserver-workers",
        default="0,1",
        help="MLServer parallel_workers settings to run, each a peer (0: inference in the server process)",
    )
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--repeat", type=int, default=1, help="runs per model; the table shows medians")
    parser.add_argument(
        "--forward-probe", action="store_true", help="only time one stage-to-stage hop, REST binary vs gRPC"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, to see it runs: digits, 0.5 s phases, 4 clients, on a free port; no peer unless "
        "--kserve-python/--mlserver-python is given (flags given as well still apply)",
    )
    if "--smoke" in sys.argv[1:]:
        parser.set_defaults(models="digits", duration=0.5, concurrency=4, port=free_port())
    args = parser.parse_args()
    if args.forward_probe:
        forward_probe(args.port + 30, args.seq)
        return 0
    if "auto" in (args.kserve_python, args.mlserver_python):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "component"))
        import serving_support  # the same locked, cached venvs the conformance tests use

        if args.kserve_python == "auto":
            args.kserve_python = str(serving_support.kserve_python())
        if args.mlserver_python == "auto":
            args.mlserver_python = str(serving_support.mlserver_python())
    rows: list[Row] = []
    for workload in workloads(args.models.split(","), args.seq):
        rows += median_rows([run_once(workload, args) for _ in range(args.repeat)])
    print(
        f"{args.repeat} run(s) of {args.duration:g} s phases, {args.concurrency} clients, "
        f"{args.threads} intra-op thread(s), max batch {args.max_batch_size}, "
        f"MLServer parallel_workers {{{args.mlserver_workers}}}"
    )
    print_rows(rows)
    print()
    print_summary(rows)
    print()
    for met, target, detail in targets(rows):
        print(f"- {'met' if met else 'NOT met' if met is False else 'not measured'}: {target} — {detail}")
    return 0


def run_once(workload: Workload, args: argparse.Namespace) -> list[Row]:
    frugal = start_frugal(workload, args.port, args.threads, args.max_batch_size)
    try:
        rows = [measure(frugal, workload, "frugal", protocol, args) for protocol in frugal.protocols]
    finally:
        frugal.stop()
    rows += raw_rows(workload, rows, args)
    if args.kserve_python:
        start = functools.partial(start_kserve, workload, args.port + 10, args.threads, args.kserve_python)
        rows += peer_rows("kserve", start, workload, args)
    for index, workers in enumerate(int(w) for w in args.mlserver_workers.split(",") if args.mlserver_python):
        port, python = args.port + 20 + 3 * index, args.mlserver_python
        start = functools.partial(start_mlserver, workload, port, args.threads, python, workers)
        rows += peer_rows(f"mlserver, {workers} workers", start, workload, args)
    return rows


def raw_rows(workload: Workload, frugal: list[Row], args: argparse.Namespace) -> list[Row]:
    """The runtime alone at the batch frugal reached on each protocol, and at batch 1."""
    rates: dict[int, float] = {}
    rows = []
    for row in frugal:
        batch = max(1, round(row.batch)) if row.batch == row.batch else 1
        if batch not in rates:
            rates[batch] = raw_throughput(workload, batch, args.threads, args.duration)[0]
        rows.append(Row(workload.name, RAW_AT_BATCH, row.protocol, rates[batch], batch=batch))
    rate, single = raw_throughput(workload, 1, args.threads, args.duration / 2)
    rows.append(Row(workload.name, RAW_ONE, "-", rate, one_client=single, batch=1))
    return rows


def peer_rows(
    name: str, start: Callable[[], Running], workload: Workload, args: argparse.Namespace
) -> list[Row]:
    """A peer's row per protocol it speaks; a failure is a row with a note, not a lost run."""
    try:
        server = start()
    except Exception as exc:
        return [Row(workload.name, name, REST_JSON, 0.0, note=f"failed to start: {exc}")]
    rows = []
    try:
        for protocol in server.protocols:
            try:
                rows.append(measure(server, workload, name, protocol, args))
            except Exception as exc:
                rows.append(Row(workload.name, name, protocol, 0.0, note=f"failed: {exc!r}"[:120]))
    finally:
        server.stop()
    return rows


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """One row per (server, protocol), each number the median over the runs."""
    keys = list(dict.fromkeys((r.server, r.protocol) for run in runs for r in run))
    merged = []
    for key in keys:
        group = [r for run in runs for r in run if (r.server, r.protocol) == key]

        def middle(name: str, group: list[Row] = group) -> float:
            return float(np.median([getattr(r, name) for r in group]))

        merged.append(
            replace(
                group[0],
                throughput=middle("throughput"),
                p50=middle("p50"),
                p99=middle("p99"),
                cpu_ms=middle("cpu_ms"),
                one_client=middle("one_client"),
                batch=middle("batch"),
                note=", ".join(sorted({r.note for r in group if r.note})),
            )
        )
    return merged


# ------------------------------------------------------------------------------------------- tables

PEERS = ("kserve", "mlserver")  # each a family: "mlserver, 0 workers" and "mlserver, 1 workers" are mlserver


def find(rows: list[Row], model: str, server: str, protocol: str) -> Row | None:
    return next((r for r in rows if (r.model, r.server, r.protocol) == (model, server, protocol)), None)


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def ratio(a: Row | None, b: Row | None) -> float:
    return a.throughput / b.throughput if a and b and b.throughput else NAN


def peers(rows: list[Row], model: str, protocol: str, family: str = "") -> list[Row]:
    """The peers' rows that answered (every configuration of each, or of one family)."""
    wanted = (family,) if family else PEERS
    return [
        r
        for r in rows
        if (r.model, r.protocol) == (model, protocol) and r.server.split(",")[0] in wanted and r.throughput
    ]


def faster_peer(rows: list[Row], model: str, protocol: str, family: str = "") -> Row | None:
    return max(peers(rows, model, protocol, family), key=lambda r: r.throughput, default=None)


def print_rows(rows: list[Row]) -> None:
    print(
        "| model | server | protocol | req/s at saturation | vs raw (frugal's batch) | vs faster peer "
        "| p50 ms at fixed rate | p99 ms at fixed rate | p50 ms one client | CPU ms/req | batch |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        raw = find(rows, row.model, RAW_AT_BATCH, row.protocol) or find(
            rows, row.model, RAW_AT_BATCH, REST_JSON
        )
        peer = None if row.server.startswith("raw") else faster_peer(rows, row.model, row.protocol)
        print(
            f"| {row.model} | {row.server} | {row.protocol} | {row.throughput:.0f} | {fmt(ratio(row, raw))} | "
            f"{fmt(ratio(row, peer))} | {fmt(row.p50)} | {fmt(row.p99)} | {fmt(row.one_client, 3)} | "
            f"{fmt(row.cpu_ms, 3)} | {fmt(row.batch, 1)} |{(' ' + row.note) if row.note else ''}"
        )


def print_summary(rows: list[Row]) -> None:
    """frugal per model and protocol, as ratios to the runtime limit and to each peer's fastest
    configuration; one client: the lowest of a peer's configurations."""
    print(
        "| model | protocol | frugal req/s | ÷ raw at frugal's batch | ÷ kserve | ÷ mlserver "
        "| one client ms: frugal / kserve / mlserver | frugal over raw batch 1, ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for ours in (r for r in rows if r.server == "frugal"):
        raw = find(rows, ours.model, RAW_AT_BATCH, ours.protocol)
        raw_one = find(rows, ours.model, RAW_ONE, "-")
        fastest = [faster_peer(rows, ours.model, ours.protocol, family) for family in PEERS]
        lowest = [
            min((r.one_client for r in peers(rows, ours.model, ours.protocol, family)), default=NAN)
            for family in PEERS
        ]
        one = " / ".join(fmt(v, 3) for v in [ours.one_client, *lowest])
        overhead = ours.one_client - raw_one.one_client if raw_one else NAN
        print(
            f"| {ours.model} | {ours.protocol} | {ours.throughput:.0f} | "
            f"{fmt(ratio(ours, raw))} (batch {fmt(raw.batch if raw else NAN, 0)}) | "
            f"{' | '.join(fmt(ratio(ours, peer)) for peer in fastest)} | {one} | {fmt(overhead, 3)} |"
        )


def targets(rows: list[Row]) -> list[tuple[bool | None, str, str]]:
    """The issue's targets: (met, or None when nothing measured it; the target; the numbers)."""
    ours = [r for r in rows if r.server == "frugal"]
    found = []

    minilm = [
        (r.protocol, ratio(r, find(rows, r.model, RAW_AT_BATCH, r.protocol)))
        for r in ours
        if r.model == "minilm"
    ]
    found.append(
        verdict("MiniLM >= 0.9x raw at the server's batch, every protocol", minilm, lambda v: v >= 0.9)
    )

    overheads = []
    for r in ours:
        raw_one = find(rows, r.model, RAW_ONE, "-")
        overheads.append((f"{r.model} {r.protocol}", r.one_client - raw_one.one_client if raw_one else NAN))
    found.append(
        verdict(
            "one-client overhead over raw <= 1 ms, every model and encoding", overheads, lambda v: v <= 1.0
        )
    )

    digits = [
        (r.protocol, ratio(r, faster_peer(rows, r.model, r.protocol))) for r in ours if r.model == "digits"
    ]
    found.append(verdict("digits >= 2x the faster peer's req/s", digits, lambda v: v >= 2.0))

    slower = []
    for r in ours:
        for peer in peers(rows, r.model, r.protocol):
            where = f"{r.model} {r.protocol} vs {peer.server}"
            slower += [(f"{where} req/s", ratio(r, peer))]
            slower += [(f"{where} one-client p50", peer.one_client / r.one_client)]
            slower += [(f"{where} fixed-rate p50", peer.p50 / r.p50)]
    found.append(
        verdict(
            "never slower than a peer (req/s, one-client p50, fixed-rate p50)",
            slower,
            lambda v: v >= 1.0,
            quiet=True,
        )
    )
    return found


def verdict(
    target: str, values: list[tuple[str, float]], ok: Callable[[float], bool], quiet: bool = False
) -> tuple[bool | None, str, str]:
    """quiet: list only the misses (the target has many comparisons)."""
    measured = [(where, v) for where, v in values if v == v]
    if not measured:
        return None, target, "no rows"
    misses = [(where, v) for where, v in measured if not ok(v)]
    shown = misses if quiet else measured
    detail = ", ".join(f"{where} {v:.2f}" for where, v in shown) or f"all {len(measured)} comparisons"
    return not misses, target, detail


# ------------------------------------------------------------------------------------ forward probe

FORWARD_ECHO = textwrap.dedent('''
    """A next stage's transport alone: decode the hidden state, answer one as large (REST binary, gRPC)."""
    import asyncio
    import sys
    import grpc
    import numpy as np
    from aiohttp import web
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from frugal.serving.server.codec import HEADER_LENGTH, decode_request, encode_response

    async def rest(request):
        decoded = decode_request(await request.read(), request.headers.get(HEADER_LENGTH))
        body, headers = encode_response("echo", "1", decoded, decoded.inputs)
        return web.Response(body=body, headers=headers)

    class Echo(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            tensor = request.inputs[0]
            array = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tuple(tensor.shape))
            reply = service_pb2.ModelInferResponse(model_name="echo")
            reply.outputs.add(name=tensor.name, datatype=tensor.datatype).shape.extend(array.shape)
            reply.raw_output_contents.append(array.tobytes())
            return reply

    async def main(rest_port, grpc_port):
        app = web.Application(client_max_size=1 << 28)
        app.router.add_post("/v2/models/echo/infer", rest)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rest_port).start()
        unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        server = grpc.aio.server(options=unlimited)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
''')


def forward_probe(port: int, seq: int) -> None:
    """One stage-to-stage hop of a MiniLM hidden state between two local processes, REST binary vs gRPC.

    REST binary is frugal's own NextStage client against an aiohttp handler that decodes with frugal's
    codec; gRPC is a grpc.aio stub against a grpc.aio servicer (tritonclient's generated OIP stubs).
    Both ends build and parse the tensor on every hop; the answer is as large as the request.
    """
    script = Path(tempfile.gettempdir()) / "frugal-bench-forward-echo.py"
    script.write_text(FORWARD_ECHO)
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), str(port + 1)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        print(
            "| hidden state | hop | p50 ms one at a time | p99 ms | hops/s, 8 in flight | echo server CPU ms/hop |"
        )
        print("|---|---|---:|---:|---:|---:|")
        rng = np.random.default_rng(0)
        for batch in (1, 32):
            array = rng.standard_normal((batch, seq, 384)).astype(np.float32)
            for hop, (p50, p99, rate, cpu) in asyncio.run(forward_hops(port, process.pid, array)).items():
                label = f"[{batch}, {seq}, 384] FP32 ({array.nbytes / 1024:.0f} KiB)"
                print(f"| {label} | {hop} | {p50:.3f} | {p99:.3f} | {rate:.0f} | {cpu:.3f} |")
    finally:
        process.terminate()
        process.wait(10)


async def forward_hops(
    port: int, pid: int, array: np.ndarray
) -> dict[str, tuple[float, float, float, float]]:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from frugal.serving.server.forward import NextStage

    rest = NextStage(f"http://127.0.0.1:{port}", "echo", timeout_s=60)
    unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port + 1}", options=unlimited)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def via_rest() -> None:
        (await rest({"hidden": array}))["hidden"].sum()

    async def via_grpc() -> None:
        message = service_pb2.ModelInferRequest(model_name="echo")
        message.inputs.add(name="hidden", datatype="FP32").shape.extend(array.shape)
        message.raw_input_contents.append(array.tobytes())
        reply = await stub.ModelInfer(message)
        np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(tuple(reply.outputs[0].shape)).sum()

    hops = {"REST binary (frugal's NextStage)": via_rest, "gRPC (grpc.aio)": via_grpc}
    count = 400 if array.shape[0] == 1 else 60
    latencies: dict[str, list[float]] = {name: [] for name in hops}
    rates: dict[str, list[float]] = {name: [] for name in hops}
    cpu: dict[str, list[float]] = {name: [] for name in hops}
    for _ in range(3):  # alternate the two hops so drift in the machine's load hits both alike
        for name, hop in hops.items():
            for _ in range(10):
                await hop()
            for _ in range(count // 3):
                start = time.perf_counter()
                await hop()
                latencies[name].append((time.perf_counter() - start) * 1000)
            cpu0 = tree_cpu_seconds(pid)
            done = await saturate(hop, concurrency=8, seconds=1.0)
            rates[name].append(done / 1.0)
            cpu[name].append((tree_cpu_seconds(pid) - cpu0) / max(done, 1) * 1000)
    await rest.close()
    await channel.close()
    return {
        name: (
            statistics.median(latencies[name]),
            percentile(latencies[name], 99),
            statistics.median(rates[name]),
            statistics.median(cpu[name]),
        )
        for name in hops
    }


async def saturate(hop: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> int:
    done, stop = 0, time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await hop()
            done += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done


if __name__ == "__main__":
    sys.exit(main())
