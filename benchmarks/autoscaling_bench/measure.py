"""The examples and their replicas measured on this machine with frugal's own code.

For each example: the compression Job, the profiling Job and the operator's planner (the variant and
one replica's profiled capacity); one ``frugal serve`` replica pinned to one CPU with the load
generator on the other (closed-loop saturation, then Poisson open-loop arrivals at fractions of it:
latency quantiles, the server's CPU and mean batch per point); the pod start (process to
``/v2/health/ready``). Stored as ``benchmarks/measurements/autoscaling-<model>.json`` (:func:`measurements`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugal.operator.api.loading import parse_yaml
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.decision import artifact_files, decide, observations, planner
from frugal.operator.manifests import container_commands
from frugal.schema.artifact_format import document, read_profile

ROOT = Path(__file__).resolve().parents[2]  # the repository
MEASUREMENTS = ROOT / "benchmarks" / "measurements"
CACHE = (
    Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "benchmarks" / "autoscaling"
)

LEVELS = np.concatenate([np.arange(0, 90, 1.0), np.arange(90, 99, 0.5), np.arange(99, 100, 0.1), [100.0]])
FAILED_MS = 1e6  # the latency a failed request counts as
# One replica = one CPU (a 1-CPU pod: `frugal serve` derives 1 intra-op thread from its affinity as it
# does from a cgroup limit); the load generator runs on the other CPU.
SERVER_CPU, CLIENT_CPU = 1, 0
# A load point during which other work used more than OTHERS_LIMIT cores is measured again (at
# most ATTEMPTS times; the least disturbed attempt is kept and its disturbance recorded).
OTHERS_LIMIT, QUIET_LIMIT, ATTEMPTS = 0.25, 0.15, 3
FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)


@dataclass(frozen=True)
class Example:
    file: str
    hardware_profile: str  # the CPU profile the example may run on (this machine is a CPU)
    point_seconds: float  # open-loop seconds per load point
    request_bodies: Callable[[], list[bytes]]


def _digits_bodies() -> list[bytes]:
    from sklearn.datasets import load_digits

    rows = load_digits().data[:64].astype(np.float32) / 16.0
    return [_body({"input": row[None, :]}) for row in rows]


def _minilm_bodies() -> list[bytes]:
    """Held-out sentences, one per request, padded to the longest of them (as a batching client
    would: only equal shapes batch together)."""
    from frugal.compression.zoo import minilm

    tokens = minilm.tokenize(minilm.sentences()[1::2][:64])
    return [
        _body({name: array[i : i + 1] for name, array in tokens.items()})
        for i in range(len(tokens["input_ids"]))
    ]


def _body(feeds: dict[str, np.ndarray]) -> bytes:
    kinds = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    inputs = [
        {"name": n, "datatype": kinds[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}
        for n, a in feeds.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


EXAMPLES = {
    "digits": Example("examples/digits.yaml", "local-cpu", 4.0, _digits_bodies),
    "minilm": Example("examples/minilm.yaml", "cpu-small", 6.0, _minilm_bodies),
}


def load_example(model: str) -> tuple[ModelDeploymentSpec, HardwareProfileSpec]:
    example = EXAMPLES[model]
    documents = []
    for name in (example.file, "examples/hardwareprofiles.yaml"):
        documents += parse_yaml((ROOT / name).read_text(encoding="utf-8"), name)
    md = next(parse_model_deployment(d) for d in documents if d.get("kind") == "ModelDeployment")
    profile = next(
        parse_hardware_profile(d)
        for d in documents
        if d.get("kind") == "HardwareProfile" and d["metadata"]["name"] == example.hardware_profile
    )
    return md, profile


def with_shard_counts(md: ModelDeploymentSpec, counts: Sequence[int]) -> ModelDeploymentSpec:
    """The example with `spec.serving.shards` covering `counts`, so compression cuts their stage files."""
    low, high = min(counts), max(counts)
    serving = md.spec.serving.model_copy(update={"shards": low if low == high else f"{low}-{high}"})
    spec = md.spec.model_copy(update={"serving": serving})
    return dataclasses.replace(md, resource=md.resource.model_copy(update={"spec": spec}))


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def _local(argv: Sequence[str]) -> list[str]:
    """A container command run on this machine: this venv's `frugal` and `python`."""
    head = {"frugal": str(Path(sys.executable).with_name("frugal")), "python": sys.executable}
    return [head.get(argv[0], argv[0]), *argv[1:]]


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")


def compress(md: ModelDeploymentSpec, directory: Path) -> None:
    """The example's compression Job (cached: rerun only when the operator's config changes)."""
    config = container_commands.compression_config(md, str(directory))
    stamp = directory.with_suffix(".config.json")
    wanted = json.dumps(config, sort_keys=True)
    if (directory / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return
    print(f"  compressing {md.model_uri} as the operator's Job would ...", file=sys.stderr)
    _run(_local(container_commands.compress(md, str(directory))))
    stamp.write_text(wanted)


def _pinned(argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(SERVER_CPU), *argv]


def profile_and_plan(md: ModelDeploymentSpec, hp: HardwareProfileSpec, directory: Path) -> dict[str, Any]:
    """The profiling Job on the replica's CPU, then the operator's planner: variant and replica capacity.

    Also run once on the whole machine (what `frugal up` does here), for the record."""
    job = _local(container_commands.profile(str(directory), hp.name, md, hp.execution_provider))
    _run(job)
    whole_machine = [document(row) for row in read_profile(directory, hp.name).variants]
    _run(_pinned(job))
    found = artifact_files.read(directory, [hp.name])
    plan = planner.plan(
        artifact_files.planner_variants(found), [decide.planner_profile(hp)], decide.objectives(md)
    )
    if plan.chosen is None or plan.chosen.throughput_rps is None:
        raise RuntimeError(f"the planner chose nothing: {plan.reason}")
    rows = [document(row) for row in read_profile(directory, hp.name).variants]
    return {
        "variant": plan.chosen.variant,
        "capacity_rps": plan.chosen.throughput_rps,
        "profiled_p95_ms": plan.chosen.latency_p95_ms,
        "plan_reason": plan.reason,
        "profile_rows": rows,
        "profile_rows_whole_machine": whole_machine,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(
    md: ModelDeploymentSpec, hp: HardwareProfileSpec, directory: Path, variant: str, port: int
) -> list[str]:
    """The operator's serving command for this replica, on localhost (threads: the server's default)."""
    argv = _pinned(_local(container_commands.serve(md, str(directory), variant, 0, 1, None)))
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return [
        *argv,
        "--idle-watts",
        str(hp.idle_watts),
        "--max-watts",
        str(hp.max_watts),
        "--log-level",
        "WARNING",
    ]


def _get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except OSError:
        return 0, b""


def start_server(argv: list[str], port: int, timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], float]:
    """Start `frugal serve`; seconds until /v2/health/ready answers 200 (polled every 10 ms)."""
    begin = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while time.perf_counter() - begin < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"frugal serve exited with {process.returncode}")
        if _get(url, 0.5)[0] == 200:
            return process, time.perf_counter() - begin
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(f"{url} not ready in {timeout} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every CPU, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the server, and by everything else on the machine (other people's work: the
    machine's busy time less the server's and this process's), over one measurement."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.start()

    def start(self) -> None:
        self.at, self.busy = time.perf_counter(), _busy_seconds()
        self.server0, self.mine0 = cpu_seconds(self.pid), cpu_seconds(os.getpid())

    def server(self) -> float:
        return (cpu_seconds(self.pid) - self.server0) / (time.perf_counter() - self.at)

    def others(self) -> float:
        busy = _busy_seconds() - self.busy
        mine = cpu_seconds(self.pid) - self.server0 + cpu_seconds(os.getpid()) - self.mine0
        return max(0.0, busy - mine) / (time.perf_counter() - self.at)

    def wait_quiet(self, patience_s: float = 60.0) -> None:
        """Until other work used under QUIET_LIMIT cores over one second (at most `patience_s`)."""
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            self.start()
            time.sleep(1.0)
            if self.others() < QUIET_LIMIT:
                return


def _scrape(base: str) -> observations.Scrape:
    _, text = _get(f"{base}/metrics", 5.0)
    return observations.parse_scrape(text.decode(), time.monotonic())


class _Connection:
    """One keep-alive HTTP/1.1 connection sending pre-encoded requests (a lean client: at thousands
    of requests per second an aiohttp client on one CPU is the bottleneck, not the server)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        """The response's status (0 when the connection failed)."""
        try:
            if self.writer is None or self.reader is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await self.reader.readexactly(length)
            if b"connection: close" in head.lower():
                self.close()
            return status
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _requests(url: str, bodies: list[bytes]) -> tuple[str, int, list[bytes]]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    return host, port, [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]


async def _closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> float:
    """Requests/s answered 200 with `concurrency` clients sending back to back."""
    host, port, requests = _requests(url, bodies)
    done = 0
    stop = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        connection, i = _Connection(host, port), offset
        while time.perf_counter() < stop:
            status = await connection.send(requests[i % len(requests)])  # (not `done += await ...`:
            done += status == 200  # that reads `done` before the await and loses the others' updates)
            i += concurrency
        connection.close()

    begin = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return done / (time.perf_counter() - begin)


async def _open_loop(
    url: str, bodies: list[bytes], rate: float, seconds: float, seed: int, connections: int = 128
) -> dict[str, Any]:
    """Poisson arrivals at `rate` for `seconds` over a pool of keep-alive connections. A request's
    latency counts from when it is sent; the client's lag behind the schedule (this process starved
    of CPU by other work, or every connection busy) is recorded beside it."""
    host, port, requests = _requests(url, bodies)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 1.3) + 20))
    arrivals = arrivals[arrivals < seconds]
    latencies = np.full(len(arrivals), FAILED_MS)
    lags = np.zeros(len(arrivals))
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[int] = asyncio.Queue()
    begin = loop.time() + 0.05

    async def worker() -> None:
        connection = _Connection(host, port)
        while (i := await due.get()) >= 0:
            sent = loop.time()
            lags[i] = sent - (begin + arrivals[i])
            if await connection.send(requests[i % len(requests)]) == 200:
                latencies[i] = (loop.time() - sent) * 1000.0
        connection.close()

    workers = [asyncio.ensure_future(worker()) for _ in range(connections)]
    i = 0
    while i < len(arrivals):
        now = loop.time()
        while i < len(arrivals) and begin + arrivals[i] <= now:
            due.put_nowait(i)
            i += 1
        if i < len(arrivals):
            await asyncio.sleep(max(0.0, begin + arrivals[i] - loop.time()))
    for _ in workers:
        due.put_nowait(-1)
    await asyncio.gather(*workers)
    elapsed = loop.time() - begin
    ok = latencies[latencies < FAILED_MS]
    return {
        "offered_rps": len(arrivals) / seconds,
        "completed_rps": len(ok) / elapsed,
        "requests": len(arrivals),
        "failed": int(len(arrivals) - len(ok)),
        "client_lag_p95_ms": float(np.percentile(lags, 95) * 1000.0) if len(lags) else 0.0,
        "scheduled_p95_ms": float(np.percentile(latencies + lags * 1000.0, 95)) if len(lags) else 0.0,
        # failed requests (429, errors) count as FAILED_MS late: quantiles over every request sent
        "quantiles_ms": np.percentile(latencies, LEVELS).tolist() if len(arrivals) else [],
    }


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def wait_for_quiet(limit: float, patience_s: float) -> None:
    """Wait (up to `patience_s`) until the 1-minute load average is below `limit`: other work shares
    these CPUs, and a replica's curve measured under it is that work's as much as the replica's."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        print(f"  load average {os.getloadavg()[0]:.2f} >= {limit}: waiting ...", file=sys.stderr)
        time.sleep(20)


def measure_model(model: str) -> dict[str, Any]:
    md, hp = load_example(model)
    directory = CACHE / model
    directory.parent.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    began = time.perf_counter()
    compress(md, directory)
    print(f"  {model}: profiling and planning ...", file=sys.stderr)
    CpuMeter(os.getpid()).wait_quiet()
    planned = profile_and_plan(md, hp, directory)
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})  # the load generator (and the readiness poller) on the other CPU
    try:
        return _measure_replica(model, md, hp, directory, planned, load_before, began)
    finally:
        os.sched_setaffinity(0, mine)


def _measure_replica(
    model: str,
    md: ModelDeploymentSpec,
    hp: HardwareProfileSpec,
    directory: Path,
    planned: dict[str, Any],
    load_before: list[float],
    began: float,
) -> dict[str, Any]:
    example = EXAMPLES[model]
    variant = planned["variant"]
    bodies = example.request_bodies()
    starts = []
    for _ in range(3):
        CpuMeter(os.getpid()).wait_quiet()
        port = _free_port()
        process, seconds = start_server(serve_command(md, hp, directory, variant, port), port)
        starts.append(seconds)
        stop_server(process)
    print(
        f"  {model}: start {statistics.median(starts):.2f} s; measuring the load curve ...", file=sys.stderr
    )
    port = _free_port()
    command = serve_command(md, hp, directory, variant, port)
    process, _ = start_server(command, port)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v2/models/{md.model_name}/infer"
    meter = CpuMeter(process.pid)
    points = []
    try:
        with _runner() as runner:
            runner.run(_closed_loop(url, bodies, 8, 1.5))  # warm-up
            tries = []
            for _ in range(ATTEMPTS):
                meter.wait_quiet()
                meter.start()
                rate = runner.run(_closed_loop(url, bodies, 32, example.point_seconds))
                tries.append((meter.others(), rate, meter.server()))
                if tries[-1][0] <= OTHERS_LIMIT:
                    break
            others, saturation, cpu_saturation = min(tries)
            print(
                f"  {model}: saturation {saturation:.0f} req/s (others {others:.2f} cores)", file=sys.stderr
            )
            for index, fraction in enumerate(FRACTIONS):
                best: dict[str, Any] | None = None
                for attempt in range(ATTEMPTS):
                    meter.wait_quiet()
                    before = _scrape(base)
                    meter.start()
                    point = runner.run(
                        _open_loop(url, bodies, fraction * saturation, example.point_seconds, index)
                    )
                    point.update(cpu_cores=meter.server(), others_cores=meter.others(), attempts=attempt + 1)
                    sample = observations.samples_from_scrapes([(before, _scrape(base))])
                    server_p95 = sample.get("latency_p95_seconds")
                    point.update(
                        fraction=fraction,
                        mean_batch=sample.get("mean_batch_size") or 1.0,
                        server_p95_ms=None if server_p95 is None else server_p95 * 1000.0,
                    )
                    if best is None or point["others_cores"] < best["others_cores"]:
                        best = point
                    if point["others_cores"] <= OTHERS_LIMIT:
                        break
                assert best is not None
                p95 = best["quantiles_ms"][int(np.searchsorted(LEVELS, 95.0))]
                print(
                    f"    {fraction:4.2f} x sat: offered {best['offered_rps']:8.1f} rps, done "
                    f"{best['completed_rps']:8.1f}, p95 {p95:9.2f} ms, cpu {best['cpu_cores']:.2f}, "
                    f"batch {best['mean_batch']:.1f}, failed {best['failed']}, others "
                    f"{best['others_cores']:.2f} cores ({best['attempts']} tries)",
                    file=sys.stderr,
                )
                points.append(best)
    finally:
        stop_server(process)
    return {
        "model": model,
        "example": example.file,
        "hardware_profile": hp.name,
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds_taken": round(time.perf_counter() - began, 1),
        "machine": machine() | {"loadavg_before": load_before},
        "serve_command": ["taskset", "-c", str(SERVER_CPU), "frugal", *command[4:]],
        "variant": variant,
        "profiling": planned,
        "start_seconds": starts,
        "saturation_rps": saturation,
        "saturation_cpu_cores": cpu_saturation,
        "saturation_others_cores": others,
        "levels": LEVELS.tolist(),
        "points": points,
    }


def measurements(model: str, remeasure: bool, quiet_load: float) -> dict[str, Any]:
    path = MEASUREMENTS / f"autoscaling-{model}.json"
    if remeasure or not path.is_file():
        print(f"measuring {model} on this machine (a few minutes) ...", file=sys.stderr)
        wait_for_quiet(quiet_load, 600.0)
        measured = measure_model(model)
        MEASUREMENTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(measured, indent=1) + "\n")
        return measured
    data: dict[str, Any] = json.loads(path.read_text())
    return data
