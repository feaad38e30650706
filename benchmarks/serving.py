"""Serving benchmark: raw ONNX Runtime in-process (the limit) vs `frugal serve` vs a peer server.

One load generator (asyncio + aiohttp, OIP v2 JSON bodies, keep-alive) drives every server the same way:
  * saturation: `--concurrency` closed-loop clients for `--duration` seconds → requests/s
  * fixed rate: open-loop arrivals at `--rate` req/s → p50 / p99 latency
  * CPU per request: the server process's user+system CPU time / requests answered
The raw runtime row loops `session.run` on one thread at batch 1 and at the server's mean batch size
under saturation (read from `frugal_batch_size`), with the same intra-op threads as the server.

Peer: KServe's Python ModelServer (a `kserve.Model` that runs the same ONNX file in ONNX Runtime),
started with the Python given by `--kserve-python` (a separate venv: kserve's dependencies are heavy).

    python benchmarks/serving.py                          # digits + MiniLM INT8, frugal vs raw
    python benchmarks/serving.py --kserve-python /tmp/kserve-venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CACHE = Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "benchmarks"


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
    directory = CACHE / f"artifacts-{workload.name}"
    model = directory / "variants/int8-dynamic/model.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    data = workload.path.read_bytes()
    model.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "schemaVersion": 1,
        "model": workload.name,
        "generation": 1,
        "source": "benchmark",
        "files": {"variants/int8-dynamic/model.onnx": {"sha256": digest, "sizeBytes": len(data)}},
        "variants": [{"name": "int8-dynamic", "file": "variants/int8-dynamic/model.onnx"}],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def body_for(feeds: dict[str, np.ndarray], binary_output: bool = False) -> bytes:
    """A JSON request; with `binary_output` the response tensors use the binary extension."""
    kinds = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    doc: dict[str, Any] = {
        "inputs": [
            {"name": n, "datatype": kinds[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in feeds.items()
        ]
    }
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    return json.dumps(doc).encode()


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
    url: str  # the infer URL
    mean_batch: float = 1.0  # requests per runtime execution under saturation (frugal only)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


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


def start_frugal(workload: Workload, port: int, threads: int, batch: int) -> Running:
    directory = artifacts_for(workload)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frugal.serving.server",
            "--artifacts",
            str(directory),
            "--variant",
            "int8-dynamic",
            "--port",
            str(port),
            "--intra-op-threads",
            str(threads),
            "--max-batch-size",
            str(batch),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/health/ready", process)
    return Running(process, f"{base}/v2/models/{workload.name}/infer")


KSERVE_MODEL = textwrap.dedent('''
    """A KServe ModelServer serving one ONNX file with ONNX Runtime (the benchmark's peer)."""
    import logging
    import sys
    import numpy as np
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
            feeds = {i.name: i.as_numpy() for i in payload.inputs}
            values = self.session.run(self.outputs, feeds)
            outputs = []
            for name, value in zip(self.outputs, values):
                out = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
                out.set_data_from_numpy(value, binary_data=False)
                outputs.append(out)
            return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or "-")

    if __name__ == "__main__":
        name, path, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        logging.getLogger("uvicorn.access").addFilter(lambda record: False)  # as frugal: no access log
        kserve.ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=False,
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
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/models/{workload.name}/ready", process)
    return Running(process, f"{base}/v2/models/{workload.name}/infer")


# ----------------------------------------------------------------------------------------- load


async def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[int, int]:
    import aiohttp

    done = errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as reply:
                    await reply.read()
                    if reply.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, errors


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one() -> None:
            start = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as reply:
                await reply.read()
                if reply.status == 200:
                    latencies.append((time.perf_counter() - start) * 1000)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return latencies


def sequential_p50(url: str, body: bytes, count: int) -> float:
    """Median ms of back-to-back requests on one keep-alive connection (a lean client: low load)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        connection.request("POST", parts.path, body, {"Content-Type": "application/json"})
        connection.getresponse().read()
        latencies.append((time.perf_counter() - start) * 1000)
    connection.close()
    return statistics.median(latencies)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Row:
    model: str
    server: str
    throughput: float
    p50: float
    p99: float
    cpu_ms: float
    sequential_p50: float = float("nan")
    note: str = ""


def measure(
    server: Running, workload: Workload, name: str, args: argparse.Namespace, binary_output: bool = False
) -> Row:
    body = body_for(workload.feeds, binary_output)
    asyncio.run(closed_loop(server.url, body, 4, 1.0))  # warm-up
    metrics = server.url.split("/v2/")[0] + "/metrics"
    batches0 = batch_counts(metrics)
    cpu0 = server.cpu_seconds()
    done, errors = asyncio.run(closed_loop(server.url, body, args.concurrency, args.duration))
    cpu = server.cpu_seconds() - cpu0
    batches1 = batch_counts(metrics)
    if batches1[1] > batches0[1]:
        server.mean_batch = (batches1[0] - batches0[0]) / (batches1[1] - batches0[1])
    latencies = asyncio.run(open_loop(server.url, body, workload.rate, args.duration))
    sequential = sequential_p50(server.url, body, 300 if workload.name == "digits" else 50)
    note = f"{errors} errors" if errors else ""
    return Row(
        workload.name,
        name,
        done / args.duration,
        percentile(latencies, 50),
        percentile(latencies, 99),
        cpu / max(done, 1) * 1000,
        sequential,
        note,
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
    parser.add_argument("--kserve-python", help="python of a venv with kserve installed (the peer)")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--repeat", type=int, default=1, help="runs per model; the table shows medians")
    args = parser.parse_args()
    rows: list[Row] = []
    for workload in workloads(args.models.split(","), args.seq):
        runs = [run_once(workload, args) for _ in range(args.repeat)]
        rows += [median_row([run[i] for run in runs]) for i in range(len(runs[0]))]
    print(
        f"{args.repeat} run(s) of {args.duration:.0f} s phases, {args.concurrency} clients, "
        f"{args.threads} intra-op thread(s), max batch {args.max_batch_size}"
    )
    print_table(rows)
    return 0


def run_once(workload: Workload, args: argparse.Namespace) -> list[Row]:
    rows = []
    frugal = start_frugal(workload, args.port, args.threads, args.max_batch_size)
    try:
        rows.append(measure(frugal, workload, "frugal", args))
        batch = max(1, round(frugal.mean_batch))
        rows.append(measure(frugal, workload, "frugal, binary outputs", args, binary_output=True))
    finally:
        frugal.stop()
    nan = float("nan")
    raw_batch, _ = raw_throughput(workload, batch, args.threads, args.duration)
    raw_one, raw_single = raw_throughput(workload, 1, args.threads, args.duration / 2)
    rows.append(
        Row(workload.name, "raw ORT, server's batch", raw_batch, nan, nan, nan, note=f"batch {batch}")
    )
    rows.append(Row(workload.name, "raw ORT, batch 1", raw_one, nan, nan, nan, raw_single))
    if args.kserve_python:
        peer = start_kserve(workload, args.port + 10, args.threads, args.kserve_python)
        try:
            rows.append(measure(peer, workload, "kserve ModelServer", args))
        except Exception as exc:  # report the peer's failure in the table instead of losing the run
            rows.append(Row(workload.name, "kserve ModelServer", 0.0, nan, nan, nan, note=f"failed: {exc}"))
        finally:
            peer.stop()
    return rows


def median_row(rows: list[Row]) -> Row:
    def middle(values: list[float]) -> float:
        return float(np.median(values))

    return Row(
        rows[0].model,
        rows[0].server,
        middle([r.throughput for r in rows]),
        middle([r.p50 for r in rows]),
        middle([r.p99 for r in rows]),
        middle([r.cpu_ms for r in rows]),
        middle([r.sequential_p50 for r in rows]),
        ", ".join(sorted({r.note for r in rows if r.note})),
    )


def print_table(rows: list[Row]) -> None:
    print(
        "| model | server | req/s at saturation | vs raw (server batch) | vs peer | p50 ms at fixed rate "
        "| p99 ms at fixed rate | p50 ms one client | CPU ms/req |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        raw = next(
            (r for r in rows if r.model == row.model and r.server == "raw ORT, server's batch"),
            None,
        ) or next(r for r in rows if r.model == row.model and r.server.startswith("raw"))
        peer = next((r for r in rows if r.model == row.model and "kserve" in r.server), None)
        vs_raw = f"{row.throughput / raw.throughput:.2f}" if raw.throughput else "-"
        vs_peer = f"{row.throughput / peer.throughput:.2f}" if peer and peer.throughput else "-"

        def fmt(value: float, digits: int = 2) -> str:
            return "-" if value != value else f"{value:.{digits}f}"

        print(
            f"| {row.model} | {row.server} | {row.throughput:.0f} | {vs_raw} | {vs_peer} | {fmt(row.p50)} | "
            f"{fmt(row.p99)} | {fmt(row.sequential_p50, 3)} | {fmt(row.cpu_ms, 3)} |"
            f"{(' ' + row.note) if row.note else ''}"
        )


if __name__ == "__main__":
    sys.exit(main())
