"""Autoscaling benchmark: frugal's policy against static, HPA-style and KEDA-style scaling on traces.

A trace-driven simulation. Every 15 s (the policy's tick) each autoscaler sees the metrics of the last
interval and sets a replica count; replicas asked for become ready after the measured pod start time.
frugal runs :func:`frugal.operator.decision.autoscaling.recommend` — the function the operator calls
every tick — fed an Observation built by the operator's own :func:`observations.observation` from
what Prometheus would answer (``rate(...[1m])`` of completed requests, ``histogram_quantile(0.95, ...)``
over the server's latency buckets, the queue/in-flight/power gauges). The peers:

* static: the fewest replicas that keep the trace's peak within the SLO (measured), never changed;
* HPA-style: CPU utilisation target with the HPA's defaults (15 s sync, 10% tolerance, unready pods
  counted at 0% on scale-up, scale-up limit max(100%, 4 pods) per 15 s, scale-down stabilisation =
  the highest recommendation of the last 300 s);
* KEDA-style: the Prometheus scaler's ``desired = ceil(rps / threshold)`` (an AverageValue external
  metric: the same 10% tolerance) fed to the same HPA behaviour.

Inputs are measured on this machine with frugal's own code (``--measure``; otherwise the stored
``benchmarks/measurements/autoscaling-<model>.json`` is used, measured when missing):

1. the example's compression Job (``frugal compress`` with the operator's config for
   ``examples/<model>.yaml``), its profiling Job (``python -m frugal.serving.profiling``) and the
   operator's planner: the chosen variant and one replica's capacity (the plan row's throughput);
2. a latency-versus-load curve of one real ``frugal serve`` replica (the operator's serve command):
   closed-loop saturation throughput, then Poisson open-loop arrivals at fractions of it, recording
   the latency quantiles, the server's CPU and its mean batch size per point;
3. the pod start time: seconds from starting ``frugal serve`` to ``/v2/health/ready`` answering 200.

Replica model: per-replica rate r below saturation → latency distribution interpolated (per
quantile) between the measured points; at or above saturation a fluid FIFO queue grows at
``rate - replicas x saturation`` (capped at the server's ``maxQueueSize`` per replica: beyond it
requests are refused, 429) and every request waits ``queue / (replicas x saturation)`` on top of the
saturated latency; the backlog carries over to the next interval. SLO attainment is the share of
all requests answered within the p95 target. Cost = replica-hours (replicas asked for, starting ones
included) x costPerHour + kWh x 0.15 USD; power = idle watts per replica + (max - idle) x busy share.

Re-planning (issue 13; ``--replan-window``, ``--no-replanning``): the operator's
:func:`frugal.operator.decision.replanning.replan` once per tick after the policy, fed the plan at
the rate the policy saw (:func:`scaling.plan_at_load` over a status.variants with every profiled
variant on two hardware profiles, the planner's 10% tolerance; window 300 s and cooldown 600 s by
default). A rollover starts the target's replicas (the plan's count at that load, at least the
policy's floor) beside the serving ones, costing from that moment; the serving option keeps serving
and being autoscaled; once all the new pods are ready the traffic (and any queue) moves to them, the
old ones stop, and the policy on the new option starts from a fresh Memory whose prior is the
option's profiled throughput. No re-planning while a rollover is under way. A run starts where the
deploy-time plan (no expected load: each option's replica priced flat out) puts it. The second
profile is *modelled*, not measured (this machine has one kind of CPU): see ``OTHER_HARDWARE``
for what is assumed. The rows: frugal fixed on each profile, with re-planning, with re-planning
priced with the replicas' measured saturation instead of the profiling Job's numbers, and, where the
trace has idle time, with re-planning and minReplicas 0.

Traces (``t_seconds,rps`` CSV, linear interpolation): the shipped ones are in multiples of one
replica's measured SLO capacity (``--trace-unit capacity``, the default) and scaled per model; use
``--trace-unit rps`` for absolute request rates. ``--write-traces`` regenerates the shipped ones
(seeded, deterministic).

    python benchmarks/autoscaling.py                       # both models, every shipped trace
    python benchmarks/autoscaling.py --model digits --trace benchmarks/traces/spiky.csv --json
    python benchmarks/autoscaling.py --measure --model minilm   # re-measure, then simulate
    python benchmarks/autoscaling.py --replan-window 900        # re-planning with a 15-minute window
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from frugal.operator.decision import artifact_files, decide, observations, planner, replanning, scaling
from frugal.operator.decision.autoscaling import Memory, Targets, recommend
from frugal.operator.decision.replanning import IDLE_RPS, Choice, ReplanMemory, ReplanSettings, replan
from frugal.operator.decision.scaling import duration_seconds, targets_for
from frugal.operator.manifests import container_commands, serving_objects

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "benchmarks" / "traces"
MEASUREMENTS = ROOT / "benchmarks" / "measurements"
CACHE = (
    Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "benchmarks" / "autoscaling"
)

PRICE_PER_KWH = 0.15
TICK_S = 15.0  # the policy's tick and the HPA's sync period
STEP_S = 1.0  # simulation step
HPA_DOWN_WINDOW_S = 300.0
HPA_TOLERANCE = 0.1
# The operator's Prometheus queries: rate(...[1m]) and histogram_quantile over the same window.
METRICS_WINDOW_S = duration_seconds(observations.RATE_WINDOW)
CPU_WINDOW_S = 15.0  # metrics-server's resolution: what the HPA's CPU utilisation averages over
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
LEVELS = np.concatenate([np.arange(0, 90, 1.0), np.arange(90, 99, 0.5), np.arange(99, 100, 0.1), [100.0]])
FAILED_MS = 1e6  # the latency a failed request counts as
# One replica = one CPU (a 1-CPU pod: `frugal serve` derives 1 intra-op thread from its affinity as it
# does from a cgroup limit); the load generator runs on the other CPU.
SERVER_CPU, CLIENT_CPU = 1, 0
# A load point during which other work used more than OTHERS_LIMIT cores is measured again (at
# most ATTEMPTS times; the least disturbed attempt is kept and its disturbance recorded).
OTHERS_LIMIT, QUIET_LIMIT, ATTEMPTS = 0.25, 0.15, 3
FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
SLO_TARGET = 0.99  # share of requests within the p95 target
HOLD_DEADLINE_S = float(serving_objects.HOLD_DEADLINE_SECONDS)  # how long the front holds a request
# What the tuned peers try: HPA CPU utilisation targets, KEDA thresholds (share of SLO capacity).
TUNED_CPU_TARGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TUNED_KEDA_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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


# ------------------------------------------------------------------------------------ measurement


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
    results = directory / "profiles" / f"{hp.name}.json"
    whole_machine = json.loads(results.read_text())["variants"]
    _run(_pinned(job))
    found = artifact_files.read(directory, [hp.name])
    plan = planner.plan(
        artifact_files.planner_variants(found), [decide.planner_profile(hp)], decide.objectives(md)
    )
    if plan.chosen is None or plan.chosen.throughput_rps is None:
        raise RuntimeError(f"the planner chose nothing: {plan.reason}")
    rows = json.loads((directory / "profiles" / f"{hp.name}.json").read_text())["variants"]
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
        data = measure_model(model)
        MEASUREMENTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        return data
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# ------------------------------------------------------------------------------------ replica model


@dataclass
class Replica:
    """One replica's measured behaviour, tabulated on a grid of per-replica rates 0..saturation."""

    saturation_rps: float
    slo_ms: float
    levels: np.ndarray
    grid: np.ndarray  # per-replica rates
    quantiles: np.ndarray  # [grid, levels] ms
    cpu: np.ndarray  # cores at each grid rate
    batch: np.ndarray
    cpu_saturation: float
    start_s: float
    capacity_rps: float  # frugal's profiled capacity (the policy's prior)
    slo_capacity_rps: float = 0.0  # highest per-replica rate whose p95 is within the SLO

    @classmethod
    def from_measurements(cls, data: dict[str, Any], slo_ms: float, size: int = 400) -> Replica:
        levels = np.asarray(data["levels"])
        points = sorted(data["points"], key=lambda p: p["offered_rps"])
        saturation = max(data["saturation_rps"], *(p["completed_rps"] for p in points if p["fraction"] > 1.0))
        below = [p for p in points if p["offered_rps"] < saturation]
        above = [p for p in points if p["offered_rps"] >= saturation]
        # The anchor at saturation: the first point measured at or beyond it (its queue grew while
        # measured: pessimistic), else the highest point below it.
        anchor = above[0] if above else below[-1]
        # An idle replica (rate 0) has the lightest point's latencies, no CPU and batches of one.
        xs = np.array([0.0] + [p["offered_rps"] for p in below] + [saturation])
        qs = np.array([np.maximum.accumulate(p["quantiles_ms"]) for p in [below[0], *below, anchor]])
        top_cpu = max(anchor["cpu_cores"], data["saturation_cpu_cores"])
        cpu = np.array([0.0] + [p["cpu_cores"] for p in below] + [top_cpu])
        batch = np.array([1.0] + [p["mean_batch"] for p in [*below, anchor]])
        grid = np.linspace(0.0, saturation, size + 1)
        quantiles = np.stack([np.interp(grid, xs, qs[:, j]) for j in range(len(levels))], axis=1)
        p95 = quantiles[:, int(np.searchsorted(levels, 95.0))]
        within = np.nonzero(p95 > slo_ms)[0]
        slo_capacity = grid[within[0] - 1] if len(within) and within[0] > 0 else saturation
        return cls(
            saturation,
            slo_ms,
            levels,
            grid,
            quantiles,
            np.interp(grid, xs, cpu),
            np.interp(grid, xs, batch),
            float(cpu[-1]),
            statistics.median(data["start_seconds"]),
            float(data["profiling"]["capacity_rps"]),
            float(slo_capacity),
        )

    def scaled(self, multiple: float, max_batch: int, start_s: float | None = None) -> Replica:
        """A modelled replica that serves `multiple` times the rate at the same latency distribution
        and CPU share at the same utilisation (a wider one, not a faster one): by Little's law it then
        holds `multiple` times the requests, in its queue and in its batches (at most `max_batch`).
        The same pod start unless `start_s` is given."""
        return dataclasses.replace(
            self,
            saturation_rps=self.saturation_rps * multiple,
            grid=self.grid * multiple,
            batch=np.clip(self.batch * multiple, 1.0, float(max_batch)),
            capacity_rps=self.capacity_rps * multiple,
            slo_capacity_rps=self.slo_capacity_rps * multiple,
            start_s=self.start_s if start_s is None else start_s,
        )

    def index(self, rate: float) -> int:
        return min(len(self.grid) - 1, max(0, round(rate / self.saturation_rps * (len(self.grid) - 1))))

    def cdf(self, k: int, bounds_ms: np.ndarray, wait_ms: float = 0.0) -> np.ndarray:
        """Share of requests at grid point k answered within each bound, after an extra queue wait."""
        return np.interp(bounds_ms - wait_ms, self.quantiles[k], self.levels / 100.0, left=0.0, right=1.0)

    def mean_ms(self) -> np.ndarray:
        """Mean latency at every grid point (the quantile function integrated over its levels)."""
        q = np.minimum(self.quantiles, FAILED_MS / 1000.0)
        return np.asarray(np.trapezoid(q, self.levels / 100.0, axis=1))

    def p95(self, k: int) -> float:
        return float(self.quantiles[k, int(np.searchsorted(self.levels, 95.0))])


# ------------------------------------------------------------------------------------------ traces


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    t = np.array([float(r["t_seconds"]) for r in rows])
    rps = np.array([float(r["rps"]) for r in rows])
    if len(t) < 2 or np.any(np.diff(t) <= 0) or np.any(rps < 0):
        raise ValueError(f"{path}: need increasing t_seconds and rps >= 0")
    return t, rps


def write_traces() -> None:
    """The shipped traces, in multiples of one replica's SLO capacity (seeded: reproducible)."""
    rng = np.random.default_rng(20240601)
    TRACES.mkdir(parents=True, exist_ok=True)
    # diurnal: a day at 1-minute resolution. Night floor 0.5 at 04:00, day peak ~5.5 at 16:00, a
    # lunchtime shoulder, 3% multiplicative noise, three bursts that rise over 2 minutes.
    t = np.arange(0, 86400 + 1, 60.0)
    hours = t / 3600.0
    day = 0.5 - 0.5 * np.cos(2 * np.pi * (hours - 4.0) / 24.0)
    load = 0.5 + 5.0 * day**1.5 + 0.4 * np.exp(-(((hours - 12.5) / 1.0) ** 2))
    load *= np.exp(rng.normal(0.0, 0.03, len(t)))
    for start_h, minutes, height in ((10.5, 10, 3.0), (14.0, 5, 2.5), (20.0, 15, 2.0)):
        ramp = np.clip((hours - start_h) * 30.0, 0, 1) * np.clip(
            (start_h + minutes / 60 - hours) * 30.0, 0, 1
        )
        load += height * ramp
    _write(TRACES / "diurnal.csv", t, load)
    # spiky: four hours at 10-second resolution. Base 0.5 with 5% noise; six spikes that jump within
    # one sample to 3-6 replicas' worth, hold 1-8 minutes and fall back within 10-30 s.
    t = np.arange(0, 4 * 3600 + 1, 10.0)
    load = 0.5 * np.exp(rng.normal(0.0, 0.05, len(t)))
    for start_min, hold_min, height, fall_s in (
        (20, 3, 4.0, 10),
        (55, 8, 3.0, 30),
        (95, 1, 6.0, 10),
        (130, 5, 5.0, 20),
        (170, 2, 3.5, 10),
        (205, 6, 4.5, 30),
    ):
        start, end = start_min * 60.0, (start_min + hold_min) * 60.0
        shape = np.clip((t - start) / 10.0 + 1, 0, 1) * np.clip((end + fall_s - t) / fall_s, 0, 1)
        load += (height - 0.5) * shape
    _write(TRACES / "spiky.csv", t, load)
    # office: a working day at 1-minute resolution. Nothing from 19:00 to 08:00 but a 10-minute
    # batch at 02:00; 08:00-19:00 a plateau of 2-3 with a lunchtime dip, 5% noise.
    t = np.arange(0, 86400 + 1, 60.0)
    hours = t / 3600.0
    day = np.clip((hours - 8.0) * 2.0, 0, 1) * np.clip((19.0 - hours) * 2.0, 0, 1)
    load = day * (
        2.5 + 0.5 * np.sin(2 * np.pi * (hours - 8.0) / 11.0) - 0.8 * np.exp(-(((hours - 12.5) / 0.5) ** 2))
    )
    load *= np.exp(rng.normal(0.0, 0.05, len(t)))
    load += 0.2 * ((hours >= 2.0) & (hours < 2.0 + 10 / 60))
    _write(TRACES / "office.csv", t, load)


def _write(path: Path, t: np.ndarray, rps: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_seconds", "rps"])
        writer.writerows([f"{a:.0f}", f"{b:.4f}"] for a, b in zip(t, rps, strict=True))


# ------------------------------------------------------------------------------------------ scalers


@dataclass
class View:
    """What an autoscaler can read at a tick."""

    now: float
    requested: int
    ready: int
    observation: observations.Observation
    rps: float  # rate(frugal_request_duration_seconds_count[1m]), summed over replicas
    cpu_utilisation: float  # mean over ready replicas, of the CPU request, over the last 15 s
    offered_rps: float = 0.0  # the trace's rate at this instant: only the reference limit reads it


class HpaBehavior:
    """The HPA's default behaviour: up at once within max(100%, 4 pods) per 15 s, down to the highest
    recommendation of the last 300 s."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.recommendations: list[tuple[float, int]] = []

    def apply(self, now: float, current: int, desired: int) -> int:
        desired = max(self.low, min(self.high, desired))
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - HPA_DOWN_WINDOW_S]
        self.recommendations.append((now, desired))
        down = max(r for _, r in self.recommendations)
        count = desired if desired > current else min(current, down)
        if count > current:
            count = min(count, max(2 * current, current + 4))
        return max(self.low, min(self.high, count))


class Static:
    name = "static"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def decide(self, view: View) -> int:
        return self.replicas


class Hpa:
    """CPU utilisation target (replica_calculator.go's GetResourceReplicas)."""

    name = "HPA-style"

    def __init__(self, target: float, low: int, high: int) -> None:
        self.target = target
        self.behavior = HpaBehavior(low, high)

    def decide(self, view: View) -> int:
        current, ready = view.requested, view.ready
        unready = max(0, current - ready)
        ratio = view.cpu_utilisation / self.target
        if ready == 0:
            desired = current
        elif not (unready > 0 and ratio > 1.0):
            desired = current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(ratio * ready)
        else:
            # scale-up with pods not ready yet: they count as 0% used
            new_ratio = view.cpu_utilisation * ready / (self.target * (ready + unready))
            if abs(1.0 - new_ratio) <= HPA_TOLERANCE or new_ratio < 1.0:
                desired = current
            else:
                desired = max(current, math.ceil(new_ratio * (ready + unready)))
        return self.behavior.apply(view.now, current, desired)


class Keda:
    """KEDA's Prometheus scaler: an AverageValue external metric, desired = ceil(rps / threshold)."""

    name = "KEDA-style"

    def __init__(self, threshold: float, low: int, high: int) -> None:
        self.threshold = threshold
        self.behavior = HpaBehavior(low, high)

    def decide(self, view: View) -> int:
        current = view.requested
        ratio = view.rps / (self.threshold * max(current, 1))
        desired = current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(view.rps / self.threshold)
        return self.behavior.apply(view.now, current, desired)


class ReactiveLimit:
    """A reference, not a peer: every tick it knows the trace's rate *at that instant* and each
    replica's true capacity within the SLO, and asks for that rate at the same utilisation target
    as frugal. No policy that reacts every 15 s to what has happened can do better; the gap between
    it and 100% is what reacting costs on that trace."""

    name = "limit: instant rate, same tick"

    def __init__(self, slo_capacity_rps: float, utilisation: float, low: int, high: int) -> None:
        self.capacity, self.utilisation, self.low, self.high = slo_capacity_rps, utilisation, low, high

    def decide(self, view: View) -> int:
        wanted = math.ceil(view.offered_rps / (self.utilisation * self.capacity) - 1e-9)
        return max(self.low, min(self.high, wanted))


class Frugal:
    """The operator's policy, with its Memory carried from tick to tick."""

    def __init__(self, targets: Targets, name: str = "frugal") -> None:
        self.name = name
        self.targets = targets
        self.memory = Memory()
        self.reasons: Counter[str] = Counter()
        self.messages: list[str] = []

    def decide(self, view: View) -> int:
        recommendation, self.memory = recommend(
            view.observation, (view.requested,), self.targets, self.memory, view.now
        )
        self.reasons[recommendation.reason.value] += 1
        if recommendation.replicas[0] != view.requested:
            self.messages.append(f"t={view.now:.0f}s {recommendation.message}")
        return recommendation.replicas[0]


# ------------------------------------------------------------------------------------------ simulation


@dataclass
class Scenario:
    model: str
    trace: str
    rates: np.ndarray  # arrivals per second, one per simulation step
    replica: Replica
    md: ModelDeploymentSpec
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    max_replicas: int
    static_replicas: int
    profile: str = ""  # the hardware profile the replicas run on


@dataclass
class Result:
    model: str
    trace: str
    policy: str
    replica_hours: float
    energy_kwh: float
    cost_usd: float
    slo_attainment: float
    scale_events: int
    peak_replicas: int
    requests: float
    refused: float
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Fleet:
    """The replicas of one option in a run: the ones serving, or during a rollover the ones starting
    beside them; the pod-seconds they have cost so far."""

    label: str  # the hardware profile (what the tables name)
    replica: Replica
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    scaler: Any
    pods: list[float]  # ready_at per pod: its length is the replicas asked for
    choice: Choice | None = None
    replica_seconds: float = 0.0
    serving_seconds: float = 0.0


def simulate(scenario: Scenario, scaler: Any, initial: int, replanner: Replanner | None = None) -> Result:
    """One run of `scaler` on the scenario's replicas from `initial` of them. With `replanner` the run
    re-plans at every tick (after the policy) and rolls over: the target's replicas start beside the
    serving ones and cost from that moment, the serving option keeps serving and being autoscaled,
    and once every new pod is ready the traffic (and any queue) moves to them and the old ones stop."""
    fleet = Fleet(
        scenario.profile,
        scenario.replica,
        scenario.cost_per_hour,
        scenario.idle_watts,
        scenario.max_watts,
        scaler,
        [0.0] * initial,
        None if replanner is None else replanner.start,
    )
    fleets = [fleet]
    starting: Fleet | None = None  # the new option's replicas during a rollover
    replica = fleet.replica
    steps = len(scenario.rates)
    bounds_ms = np.array(LATENCY_BUCKETS_S) * 1000.0
    bounds_slo = np.append(bounds_ms, replica.slo_ms)  # the buckets, then the SLO
    max_queue = scenario.md.max_queue_size
    completions = np.zeros(steps)
    buckets = np.zeros((steps, len(bounds_ms) + 1))  # cumulative counts per bucket, +Inf last
    cpu_util = np.zeros(steps)
    pods = fleet.pods
    backlog = within = refused = joules = 0.0
    events = 0
    peak = initial
    tick_every = round(TICK_S / STEP_S)
    metrics_steps = round(METRICS_WINDOW_S / STEP_S)
    cpu_steps = round(CPU_WINDOW_S / STEP_S)
    top = len(replica.grid) - 1
    queue_gauge = inflight_gauge = 0.0
    mean_latency = replica.mean_ms()
    holds = isinstance(scaler, Frugal) and scaler.targets.scale_to_zero_after_s is not None
    held: list[tuple[float, float]] = []  # (arrived at, requests) held by the front at zero replicas
    waits: list[tuple[float, float]] = []  # (seconds waited, requests) of each wake-up
    for s in range(steps):
        t = s * STEP_S
        rate = scenario.rates[s]
        if starting is not None and all(at <= t for at in starting.pods):
            # The new option is ready: the traffic, and the queue, move to it; the old one stops.
            fleet.pods.clear()
            fleet, starting = starting, None
            replica, pods, mean_latency = fleet.replica, fleet.pods, fleet.replica.mean_ms()
        ready = sum(1 for at in pods if at <= t)
        arrivals = rate * STEP_S
        fleet.replica_seconds += len(pods) * STEP_S
        fleet.serving_seconds += STEP_S
        if ready == 0:
            if holds:  # the front holds what arrives at zero, up to its bound and deadline
                room = max(0.0, max_queue - sum(n for _, n in held))
                held.append((t, min(arrivals, room)))
                refused += max(0.0, arrivals - room)
                expired = [n for at, n in held if t - at >= HOLD_DEADLINE_S]
                refused += sum(expired)
                held = [(at, n) for at, n in held if t - at < HOLD_DEADLINE_S]
            else:
                refused += arrivals
            queue_gauge = inflight_gauge = 0.0
        elif held:  # the first replica is ready: the held requests are answered, all late
            # (the wait was at the front: the replica's own histogram sees ordinary requests)
            late = sum(n for _, n in held)
            cdf = replica.cdf(replica.index(late / STEP_S / ready), bounds_ms)
            completions[s] += late
            buckets[s, :-1] += late * cdf
            buckets[s, -1] += late
            waits += [(t - at, n) for at, n in held]
            held = []
        mu = ready * replica.saturation_rps
        if ready == 0:
            pass
        elif backlog <= 0.0 and rate < mu:
            k = replica.index(rate / ready)
            cdf = replica.cdf(k, bounds_slo)
            within += arrivals * cdf[-1]
            buckets[s, :-1] += arrivals * cdf[:-1]
            buckets[s, -1] += arrivals
            completions[s] += arrivals
            cpu_util[s] = replica.cpu[k] / replica.cpu_saturation
            queue_gauge = rate * max(0.0, mean_latency[k] - mean_latency[0]) / 1000.0
            inflight_gauge = rate * mean_latency[k] / 1000.0
        else:
            cap = ready * max_queue
            end = backlog + (rate - mu) * STEP_S
            lost = max(0.0, end - cap)
            accepted = arrivals - lost
            middle = min(cap, max(0.0, backlog + (rate - mu) * STEP_S / 2.0))
            wait_ms = middle / mu * 1000.0
            cdf = replica.cdf(top, bounds_slo, wait_ms)
            within += accepted * cdf[-1]
            refused += lost
            buckets[s, :-1] += accepted * cdf[:-1]
            buckets[s, -1] += accepted
            completions[s] += min(backlog + accepted, mu * STEP_S)
            backlog = min(cap, max(0.0, end))
            cpu_util[s] = 1.0
            queue_gauge = backlog + rate * max(0.0, mean_latency[top] - mean_latency[0]) / 1000.0
            inflight_gauge = backlog + ready * replica.batch[top]
        busy = min(ready, completions[s] / STEP_S / replica.saturation_rps) if ready else 0.0
        joules += (len(pods) * fleet.idle_watts + busy * (fleet.max_watts - fleet.idle_watts)) * STEP_S
        if starting is not None:  # started, not serving yet: idle power
            starting.replica_seconds += len(starting.pods) * STEP_S
            joules += len(starting.pods) * starting.idle_watts * STEP_S
        if (s + 1) % tick_every:
            continue
        now = t + STEP_S
        first = max(0, s + 1 - metrics_steps)
        window = (s + 1 - first) * STEP_S
        served = float(completions[first : s + 1].sum()) / window
        counts = buckets[first : s + 1].sum(axis=0)
        p95 = observations.histogram_quantile(
            0.95, [*zip(LATENCY_BUCKETS_S, counts[:-1], strict=True), (math.inf, counts[-1])]
        )
        k = replica.index(served / ready) if ready else 0
        requested = len(pods)
        values = {
            "request_rate": served,
            "queue_depth": queue_gauge,
            "inflight": inflight_gauge,
            "mean_batch_size": float(replica.batch[k]),
            "watts": ready * fleet.idle_watts
            + min(ready, served / replica.saturation_rps) * (fleet.max_watts - fleet.idle_watts),
        }
        if p95 is not None:
            values["latency_p95_seconds"] = p95
        observation = observations.observation(
            "default",
            scenario.md.model_name,
            [requested],
            [ready],
            {("default", scenario.md.model_name, 0): observations.ShardSample(values)} if ready else {},
            held_requests=sum(n for _, n in held),
        )
        cpu = float(cpu_util[max(0, s + 1 - cpu_steps) : s + 1].mean())
        view = View(now, requested, ready, observation, served, cpu, float(rate))
        wanted = int(fleet.scaler.decide(view))
        if wanted != requested:
            events += 1
            if wanted > requested:
                pods += [now + replica.start_s] * (wanted - requested)
            else:
                pods[:] = sorted(pods)[:wanted]  # the newest (starting) pods go first
        if replanner is not None and starting is None and fleet.choice is not None:
            # the operator's order: the policy, then re-planning at the rate the policy saw
            move = replanner.tick(served, fleet.choice, now)
            if move is not None:
                option, count = move
                starting = replanner.fleet(option, count, now, scaler.name)
                fleets.append(starting)
        starting_pods = 0 if starting is None else len(starting.pods)
        peak = max(peak, len(pods) + starting_pods)
    total = float(scenario.rates.sum() * STEP_S)
    energy_kwh = joules / 3.6e6
    replica_hours = sum(f.replica_seconds for f in fleets) / 3600.0
    cost_usd = sum(f.replica_seconds / 3600.0 * f.cost_per_hour for f in fleets)
    notes: dict[str, Any] = {}
    if isinstance(scaler, Frugal):
        reasons: Counter[str] = Counter()
        for f in fleets:
            reasons.update(f.scaler.reasons)
        notes = {"reasons": dict(reasons), "capacity_rps_end": fleet.scaler.memory.capacity_rps}
    if waits:
        held_total = sum(n for _, n in waits)
        notes["held_requests"] = held_total
        notes["mean_wake_wait_s"] = sum(w * n for w, n in waits) / held_total if held_total else 0.0
    if replanner is not None:
        serving: dict[str, float] = {}
        for f in fleets:
            serving[f.label] = serving.get(f.label, 0.0) + f.serving_seconds / 3600.0
        notes |= {
            "rollovers": replanner.rollovers,
            "serving_hours": dict(serving),
            "ended_on": str(fleet.choice),
            "replan_reasons": dict(replanner.reasons),
            "replan_log": replanner.messages[:40],
        }
    return Result(
        scenario.model,
        scenario.trace,
        scaler.name,
        replica_hours,
        energy_kwh,
        cost_usd + energy_kwh * PRICE_PER_KWH,
        within / total if total else 1.0,
        events,
        peak,
        total,
        refused,
        notes,
    )


# ------------------------------------------------------------------------------------------ re-planning

# The other hardware re-planning may move a model to. This machine has one kind of CPU, so it is
# modelled, not measured: a replica of it is the measured replica with its rate axis stretched by
# `throughput_multiple` (the same latency distribution at the same utilisation, so that multiple of
# its queue and batch, up to maxBatchSize: Replica.scaled; the same pod start unless --replan-start-s
# says otherwise), and its profiled throughput is each variant's profiled row times the same multiple. MiniLM's is the example's own second profile (gpu-t4: the price and power
# of examples/hardwareprofiles.yaml) with an assumed 9x one CPU replica's throughput (~5,000
# sentences/s); digits' example names one profile, so its second is hypothetical: a 16-CPU share of
# the same CPU at 16x the throughput (linear scaling) and 16x the power, priced at 0.22 USD/h instead
# of 16 x 0.02 (a bigger share at a discount). Both multiples and the digits price are assumptions,
# chosen so that the cheaper option changes inside the traces' range (about 4.5 replicas' worth).
CPU_X16 = {
    "apiVersion": "frugal.dev/v1alpha1",
    "kind": "HardwareProfile",
    "metadata": {"name": "cpu-x16"},
    "spec": {
        "accelerator": {"kind": "cpu", "model": "x86-64", "count": 16},
        "resources": {"requests": {"cpu": "16", "memory": "8Gi"}, "limits": {"cpu": "16", "memory": "8Gi"}},
        "executionProvider": "CPUExecutionProvider",
        "costPerHour": "0.22",
        "power": {"idleWatts": 80, "maxWatts": 240},
    },
}


@dataclass(frozen=True)
class OtherHardware:
    profile: str  # a HardwareProfile of examples/hardwareprofiles.yaml, or CPU_X16's
    throughput_multiple: float  # assumed: one of its replicas serves this many measured replicas' worth
    document: dict[str, Any] | None = None  # the profile, when it is not in examples/hardwareprofiles.yaml


OTHER_HARDWARE = {
    "digits": OtherHardware("cpu-x16", 16.0, CPU_X16),
    "minilm": OtherHardware("gpu-t4", 9.0),
}


@dataclass(frozen=True)
class Option:
    """One (variant, hardware profile) a run may serve on: its replica model, price and power."""

    choice: Choice
    replica: Replica
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    measured: bool  # the replica measured on this machine (else scaled from it)
    prior_rps: float  # its throughput as the plan has it, and the policy's capacity prior on it


@dataclass
class ReplanSetup:
    """What re-planning prices with, as the operator would have it: the ModelDeployment with both
    profiles among spec.serving.hardwareProfiles, status.variants with every variant's profiled row
    on each, the HardwareProfiles, and an Option for every row."""

    model: str
    md: ModelDeploymentSpec
    status: dict[str, Any]
    profiles: dict[str, HardwareProfileSpec]
    options: dict[Choice, Option]
    deployed: Choice  # the deploy-time plan's choice (no expected load: a replica flat out)
    measured: Choice
    other: OtherHardware


def replan_setup(
    model: str, data: dict[str, Any], start_s: float | None, measured_capacity: bool = False
) -> ReplanSetup:
    """`measured_capacity`: price every option (and start the policy on it) with its replica's
    measured saturation throughput instead of the profiling Job's number, as the main table's
    "frugal, measured capacity" row does for the policy alone."""
    example, other = EXAMPLES[model], OTHER_HARDWARE[model]
    documents = []
    for name in (example.file, "examples/hardwareprofiles.yaml"):
        documents += parse_yaml((ROOT / name).read_text(encoding="utf-8"), name)
    if other.document is not None:
        documents.append(other.document)
    document = next(d for d in documents if d.get("kind") == "ModelDeployment")
    serving = document["spec"]["serving"]
    if other.profile not in serving["hardwareProfiles"]:
        document = json.loads(json.dumps(document))  # a copy with the other profile added
        document["spec"]["serving"]["hardwareProfiles"] = [*serving["hardwareProfiles"], other.profile]
    md = parse_model_deployment(document)
    hardware = [parse_hardware_profile(d) for d in documents if d.get("kind") == "HardwareProfile"]
    profiles = {p.name: p for p in hardware if p.name in (example.hardware_profile, other.profile)}
    measured_replica = Replica.from_measurements(data, md.latency_p95_ms)
    rows = data["profiling"]["profile_rows"]
    base = next(float(r["throughputRps"]) for r in rows if r["name"] == data["variant"])
    multiples = {example.hardware_profile: 1.0, other.profile: other.throughput_multiple}
    # Sizes and accuracy drops are not in the measurement file: 0 here. Every variant profiled was
    # within the accuracy budget when measured (the plan_reason says so), so this changes no
    # feasibility; it only leaves ties among near-equal costs to power, then cost, then names.
    status = {
        "variants": [
            {
                "name": r["name"],
                "sizeBytes": 0,
                "metric": {"name": "accuracy", "drop": 0.0},
                "profiles": [
                    {
                        "hardwareProfile": name,
                        "shards": int(r.get("shards") or 1),
                        "latencyP95Ms": float(r["latencyP95Ms"]),
                        "throughputRps": float(r["throughputRps"]) * multiple,
                    }
                    for name, multiple in multiples.items()
                ],
            }
            for r in rows
        ]
    }
    options = {}
    for entry in status["variants"]:
        for row in entry["profiles"]:
            choice = Choice(entry["name"], row["hardwareProfile"], row["shards"])
            profile = profiles[choice.profile]
            exact = choice.variant == data["variant"] and choice.profile == example.hardware_profile
            replica = (
                measured_replica
                if exact
                else measured_replica.scaled(
                    row["throughputRps"] / base,
                    md.max_batch_size,
                    start_s if choice.profile == other.profile else None,
                )
            )
            if measured_capacity:
                row["throughputRps"] = replica.saturation_rps
            options[choice] = Option(
                choice,
                replica,
                float(profile.cost_per_hour),
                profile.idle_watts,
                profile.max_watts,
                exact,
                row["throughputRps"],
            )
    variants = [
        planner.Variant(
            entry["name"],
            entry["sizeBytes"],
            entry["metric"]["drop"],
            measurements=tuple(
                planner.Measurement(r["hardwareProfile"], r["latencyP95Ms"], r["throughputRps"], r["shards"])
                for r in entry["profiles"]
            ),
        )
        for entry in status["variants"]
    ]
    candidates = [decide.planner_profile(profiles[name]) for name in md.serving_profiles]
    deploy_time = planner.plan(variants, candidates, decide.objectives(md))
    if deploy_time.chosen is None:
        raise RuntimeError(f"the deploy-time plan chose nothing: {deploy_time.reason}")
    measured = Choice(data["variant"], example.hardware_profile, md.shards)
    return ReplanSetup(model, md, status, profiles, options, Choice.of(deploy_time.chosen), measured, other)


class Replanner:
    """The operator's re-planning, once per tick at the rate the policy saw: the plan at that load
    (:func:`scaling.plan_at_load`, what status.planAtLoad shows), then :func:`replanning.replan`. A
    rollover's target starts with the replicas the plan gives it at that load (at least the policy's
    floor, at most maxReplicas), under the same policy with a fresh Memory whose capacity prior is the
    target's throughput as the plan has it (``Option.prior_rps``: the profiled one unless the setup
    is priced with measured capacity). No re-planning while a rollover is under way."""

    def __init__(self, setup: ReplanSetup, targets: Targets, settings: ReplanSettings, start: Choice) -> None:
        self.setup, self.targets, self.settings, self.start = setup, targets, settings, start
        self.memory = ReplanMemory()
        self.reasons: Counter[str] = Counter()
        self.messages: list[str] = []
        self.rollovers = 0

    def tick(self, rate: float, running: Choice, now: float) -> tuple[Option, int] | None:
        setup = self.setup
        if rate <= 0 and self.targets.min_replicas >= 1:
            # Idle with replicas kept: what plan_at_load does for a spec with minReplicas >= 1 (the
            # example's spec may say 0; these rows keep a floor of 1).
            rate = IDLE_RPS
        plan = scaling.plan_at_load(setup.md, setup.status, setup.profiles, rate)
        if plan is None:  # no load to price at (0 req/s): replan holds, NoLoad
            plan = planner.Plan(None, (), "no load to price at")
        decision, self.memory = replan(plan, running, self.settings, self.memory, now)
        self.reasons[decision.reason.value] += 1
        if not decision.roll_over or decision.target is None:
            return None
        row = plan.option(decision.target.variant, decision.target.profile, decision.target.shards)
        wanted = row.replicas if row is not None and row.replicas else 1
        count = max(1, self.targets.min_replicas, min(wanted, self.targets.max_replicas))
        self.rollovers += 1
        self.messages.append(f"t={now:.0f}s {decision.message} (starting {count})")
        return setup.options[decision.target], count

    def fleet(self, option: Option, count: int, now: float, name: str) -> Fleet:
        """The target's replicas, asked for now, ready after its pod start."""
        return Fleet(
            option_label(self.setup, option.choice),
            option.replica,
            option.cost_per_hour,
            option.idle_watts,
            option.max_watts,
            Frugal(option_targets(self.targets, option), name),
            [now + option.replica.start_s] * count,
            option.choice,
        )


def option_label(setup: ReplanSetup, choice: Choice) -> str:
    return (
        choice.profile
        if choice.variant == setup.measured.variant
        else f"{choice.variant} on {choice.profile}"
    )


def option_targets(targets: Targets, option: Option) -> Targets:
    """The policy's targets on `option`: its `prior_rps` as the capacity prior, its price and power."""
    return dataclasses.replace(
        targets,
        capacity_rps=option.prior_rps,
        cost_per_replica_hour=option.cost_per_hour,
        idle_watts=option.idle_watts,
        max_watts=option.max_watts,
    )


def on_option(scenario: Scenario, setup: ReplanSetup, option: Option) -> Scenario:
    """The scenario with `option`'s replicas, price and power."""
    return dataclasses.replace(
        scenario,
        replica=option.replica,
        cost_per_hour=option.cost_per_hour,
        idle_watts=option.idle_watts,
        max_watts=option.max_watts,
        profile=option_label(setup, option.choice),
    )


def scenario_for(
    model: str, data: dict[str, Any], trace: Path, unit: str
) -> tuple[Scenario, Targets, dict[str, Any]]:
    md, hp = load_example(model)
    replica = Replica.from_measurements(data, md.latency_p95_ms)
    t, values = read_trace(trace)
    scale = replica.slo_capacity_rps if unit == "capacity" else 1.0
    steps = np.arange(0.0, t[-1], STEP_S) + STEP_S / 2
    rates = np.interp(steps, t, values) * scale
    peak = float(rates.max())
    static = max(1, math.ceil(peak / replica.slo_capacity_rps - 1e-9))
    max_replicas = max(8, 3 * static)
    scenario = Scenario(
        model,
        trace.stem,
        rates,
        replica,
        md,
        float(hp.cost_per_hour),
        hp.idle_watts,
        hp.max_watts,
        max_replicas,
        static,
        hp.name,
    )
    targets = dataclasses.replace(
        targets_for(md, hp, replica.capacity_rps, metrics_window_s=METRICS_WINDOW_S),
        min_replicas=1,
        max_replicas=max_replicas,
        stabilization_window_s=60.0,
        cap_watts=None,
        price_per_kwh=PRICE_PER_KWH,
    )
    info = {"peak_rps": peak, "static_replicas": static, "max_replicas": max_replicas, "scale": scale}
    return scenario, targets, info


def run_all(
    model: str,
    data: dict[str, Any],
    trace: Path,
    args: argparse.Namespace,
    setups: tuple[ReplanSetup, ReplanSetup] | None = None,
) -> tuple[list[Result], dict[str, Any], list[Result]]:
    """Every policy on one (model, trace); with `setups` (priced with the profiled and with the
    measured throughput), the re-planning rows too (the third list)."""
    scenario, targets, info = scenario_for(model, data, trace, args.trace_unit)
    replica = scenario.replica
    initial = max(1, math.ceil(scenario.rates[0] / (0.7 * replica.slo_capacity_rps)))
    keda_threshold = args.keda_fraction * replica.slo_capacity_rps
    info |= {"keda_threshold_rps": keda_threshold, "hpa_cpu_target": args.hpa_cpu_target, "initial": initial}
    high = scenario.max_replicas
    scalers: list[Any] = [
        Static(scenario.static_replicas),
        Hpa(args.hpa_cpu_target, 1, high),
        Keda(keda_threshold, 1, high),
        Frugal(targets),
        # The same policy told the replica's measured saturation throughput instead of the profiling
        # Job's number: separates the policy from its capacity prior.
        Frugal(
            dataclasses.replace(targets, capacity_rps=replica.saturation_rps), "frugal, measured capacity"
        ),
        ReactiveLimit(replica.slo_capacity_rps, targets.target_utilisation, 1, high),
        # minReplicas 0 behind the front: to zero after 300 s without requests (the CRD's default).
        Frugal(
            dataclasses.replace(
                targets, min_replicas=0, scale_to_zero_after_s=float(scaling.DEFAULT_SCALE_TO_ZERO_SECONDS)
            ),
            "frugal, scale to zero",
        ),
    ]
    results = []
    for scaler in scalers:
        start = scenario.static_replicas if isinstance(scaler, Static) else initial
        results.append(simulate(scenario, scaler, start))
        if isinstance(scaler, Frugal):
            info[f"{scaler.name} scale log"] = scaler.messages[:60]
    # The peers with the setting a user would pick after trying: the cheapest that keeps >= 99% of
    # requests within the SLO, else the one with the best attainment.
    for label, make, settings in (
        ("HPA-style", lambda v: Hpa(v, 1, high), TUNED_CPU_TARGETS),
        ("KEDA-style", lambda v: Keda(v * replica.slo_capacity_rps, 1, high), TUNED_KEDA_FRACTIONS),
    ):
        tried = [(v, simulate(scenario, make(v), initial)) for v in settings]
        meeting = [(v, r) for v, r in tried if r.slo_attainment >= SLO_TARGET]
        value, best = (
            min(meeting, key=lambda x: x[1].cost_usd)
            if meeting
            else max(tried, key=lambda x: x[1].slo_attainment)
        )
        best.policy = f"{label}, tuned"
        best.notes = {"setting": value, "meets_slo": bool(meeting)}
        info[f"{label} tuned setting"] = value
        results.append(best)
    if setups is None:
        return results, info, []
    window = ReplanSettings(window_s=args.replan_window, cost_tolerance=decide.COST_TOLERANCE)
    return results, info, run_replanning(scenario, targets, setups[0], results, window, setups[1])


def run_replanning(
    scenario: Scenario,
    targets: Targets,
    setup: ReplanSetup,
    results: list[Result],
    settings: ReplanSettings,
    measured_setup: ReplanSetup | None = None,
) -> list[Result]:
    """The re-planning rows of one (model, trace): frugal fixed on each hardware profile (the measured
    one is the main table's "frugal" row), then with re-planning, from the deploy-time plan's choice;
    and with minReplicas 0 where the trace has idle time; with `measured_setup`, re-planning priced
    with the replicas' measured throughput too."""
    group = {r.policy: r for r in results}
    measured = setup.options[setup.measured]
    other = setup.options[Choice(setup.measured.variant, setup.other.profile, setup.measured.shards)]
    asleep = dataclasses.replace(
        targets, min_replicas=0, scale_to_zero_after_s=float(scaling.DEFAULT_SCALE_TO_ZERO_SECONDS)
    )

    def initial(option: Option) -> int:
        return max(1, math.ceil(scenario.rates[0] / (0.7 * option.replica.slo_capacity_rps)))

    fixed = dataclasses.replace(group["frugal"], policy=f"frugal, fixed {measured.choice.profile}")
    rows = [fixed]
    scaler = Frugal(option_targets(targets, other), f"frugal, fixed {other.choice.profile}")
    rows.append(simulate(on_option(scenario, setup, other), scaler, initial(other)))
    runs = [("frugal + re-planning", targets)]
    if float(scenario.rates.min()) <= 0.0:  # idle time: scale to zero means something
        zero = group["frugal, scale to zero"]
        rows.append(
            dataclasses.replace(zero, policy=f"frugal, fixed {measured.choice.profile}, scale to zero")
        )
        runs.append(("frugal + re-planning, scale to zero", asleep))
    plans = [(name, run_targets, setup) for name, run_targets in runs]
    if measured_setup is not None:
        plans.append(("frugal + re-planning, measured capacity", targets, measured_setup))
    for name, run_targets, priced in plans:
        start = priced.options[priced.deployed]
        replanner = Replanner(priced, run_targets, settings, start.choice)
        scaler = Frugal(option_targets(run_targets, start), name)
        rows.append(simulate(on_option(scenario, priced, start), scaler, initial(start), replanner))
    return rows


def replica_summary(model: str, data: dict[str, Any]) -> dict[str, Any]:
    md, _ = load_example(model)
    replica = Replica.from_measurements(data, md.latency_p95_ms)
    p95 = int(np.searchsorted(np.asarray(data["levels"]), 95.0))
    return {
        "model": model,
        "variant": data["variant"],
        "slo_ms": md.latency_p95_ms,
        "profiled_capacity_rps": replica.capacity_rps,
        "saturation_rps": replica.saturation_rps,
        "slo_capacity_rps": replica.slo_capacity_rps,
        "start_s": replica.start_s,
        "cpu_at_saturation": replica.cpu_saturation,
        "curve": [
            {
                "fraction": p["fraction"],
                "offered_rps": round(p["offered_rps"], 1),
                "completed_rps": round(p["completed_rps"], 1),
                "p50_ms": round(p["quantiles_ms"][int(np.searchsorted(data["levels"], 50.0))], 2),
                "p95_ms": round(p["quantiles_ms"][p95], 2),
                "server_p95_ms": None if p["server_p95_ms"] is None else round(p["server_p95_ms"], 2),
                "cpu_cores": round(p["cpu_cores"], 2),
                "mean_batch": round(p["mean_batch"], 1),
                "failed": p["failed"],
            }
            for p in data["points"]
        ],
    }


# ------------------------------------------------------------------------------------------ output


def print_inputs(summaries: list[dict[str, Any]], datas: dict[str, dict[str, Any]]) -> None:
    print(
        "| model | variant | SLO p95 | profiled capacity (frugal) | saturation (measured) | within SLO up to | pod start |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for s in summaries:
        print(
            f"| {s['model']} | {s['variant']} | {s['slo_ms']:g} ms | {s['profiled_capacity_rps']:.0f} req/s | "
            f"{s['saturation_rps']:.0f} req/s | {s['slo_capacity_rps']:.0f} req/s | {s['start_s']:.2f} s |"
        )
    print()
    print(
        "| model | load (x saturation) | offered req/s | done req/s | p50 ms | p95 ms | server p95 ms | CPU cores | mean batch | failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summaries:
        for p in s["curve"]:
            server = "-" if p["server_p95_ms"] is None else f"{p['server_p95_ms']:.2f}"
            print(
                f"| {s['model']} | {p['fraction']:.2f} | {p['offered_rps']:.0f} | {p['completed_rps']:.0f} | "
                f"{p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {server} | {p['cpu_cores']:.2f} | {p['mean_batch']:.1f} | {p['failed']} |"
            )
    print()


def print_results(results: list[Result], infos: list[dict[str, Any]]) -> None:
    print(
        "| model | trace | policy | replica-h | cost USD | energy kWh | SLO attainment | scale events "
        "| peak replicas | cost vs static | cost vs HPA |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        group = [x for x in results if x.model == r.model and x.trace == r.trace]
        static = next(x for x in group if x.policy == "static")
        hpa = next(x for x in group if x.policy == "HPA-style")  # the default 70% CPU target
        print(
            f"| {r.model} | {r.trace} | {r.policy} | {r.replica_hours:.2f} | {r.cost_usd:.4f} | "
            f"{r.energy_kwh:.4f} | {100 * r.slo_attainment:.2f}% | {r.scale_events} | {r.peak_replicas} | "
            f"{r.cost_usd / static.cost_usd:.2f} | {r.cost_usd / hpa.cost_usd:.2f} |"
        )
    print()
    for info in infos:
        print(
            f"{info['model']} / {info['trace']}: peak {info['peak_rps']:.0f} req/s -> static "
            f"{info['static_replicas']} replicas, max {info['max_replicas']}, start {info['initial']}; "
            f"KEDA threshold {info['keda_threshold_rps']:.0f} req/s per replica, HPA CPU target "
            f"{100 * info['hpa_cpu_target']:.0f}%"
        )
    print()
    for verdict in verdicts(results):
        print(verdict["line"])


def verdicts(results: list[Result]) -> list[dict[str, Any]]:
    found = []
    for model, trace in dict.fromkeys((r.model, r.trace) for r in results):
        group = {r.policy: r for r in results if r.model == model and r.trace == trace}
        frugal, static, hpa = group["frugal"], group["static"], group["HPA-style"]
        tuned, limit = group["HPA-style, tuned"], group["limit: instant rate, same tick"]
        saving_static = 1 - frugal.cost_usd / static.cost_usd
        saving_hpa = 1 - frugal.cost_usd / hpa.cost_usd
        saving_tuned = 1 - frugal.cost_usd / tuned.cost_usd
        checks = {
            "slo>=99%": frugal.slo_attainment >= SLO_TARGET,
            "cost<=0.60 static": saving_static >= 0.40,
            "cost<=0.85 HPA": saving_hpa >= 0.15,
        }
        status = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items())
        line = (
            f"{model} / {trace}: frugal SLO {100 * frugal.slo_attainment:.2f}% (reactive limit "
            f"{100 * limit.slo_attainment:.2f}%), {100 * saving_static:.0f}% cheaper than static, "
            f"{100 * saving_hpa:.0f}% cheaper than HPA-style (HPA {100 * hpa.slo_attainment:.2f}% SLO), "
            f"{100 * saving_tuned:.0f}% cheaper than HPA-style tuned (target {tuned.notes['setting']:g}: "
            f"{100 * tuned.slo_attainment:.2f}% SLO) -> {status}"
        )
        asleep = group["frugal, scale to zero"]
        line += (
            f"; scale to zero: {100 * (1 - asleep.cost_usd / frugal.cost_usd):.0f}% cheaper than frugal "
            f"without it, SLO {100 * asleep.slo_attainment:.2f}%, {asleep.notes.get('held_requests', 0):.0f} "
            f"request(s) held, waking in {asleep.notes.get('mean_wake_wait_s', 0):.1f} s on average"
        )
        found.append({"model": model, "trace": trace, "checks": checks, "line": line})
    return found


def option_rows(setup: ReplanSetup) -> list[dict[str, Any]]:
    """The options re-planning chooses among, and which of their numbers are measured."""
    rows = []
    for choice, option in setup.options.items():
        replica = option.replica
        rows.append(
            {
                "model": setup.model,
                "option": str(choice),
                "profile": choice.profile,
                "variant": choice.variant,
                "source": _source(setup, option),
                "profiled_throughput_rps": replica.capacity_rps,
                "saturation_rps": replica.saturation_rps,
                "slo_capacity_rps": replica.slo_capacity_rps,
                "cost_per_hour": option.cost_per_hour,
                "idle_watts": option.idle_watts,
                "max_watts": option.max_watts,
                "start_s": replica.start_s,
                "deploy_time_choice": choice == setup.deployed,
            }
        )
    return rows


def _source(setup: ReplanSetup, option: Option) -> str:
    """Which of an option's numbers are measured."""
    if option.measured:
        return "measured"
    scale = option.replica.saturation_rps / setup.options[setup.measured].replica.saturation_rps
    if option.choice.profile == setup.measured.profile:
        return f"throughput profiled; curve: the measured one x{scale:.3g}"
    return f"modelled: {setup.other.throughput_multiple:g} x its row on {setup.measured.profile}"


def _fixed(group: dict[str, Result], setup: ReplanSetup) -> tuple[Result, Result]:
    return (
        group[f"frugal, fixed {setup.measured.profile}"],
        group[f"frugal, fixed {setup.other.profile}"],
    )


def replan_verdicts(
    rows: list[Result], results: list[Result], setups: dict[str, ReplanSetup]
) -> list[dict[str, Any]]:
    """Per (model, trace): what re-planning (and scale to zero with it) costs and saves against each
    fixed option: the measured one (A) and the modelled one (B), and which the deploy-time plan picks."""
    found = []
    for model, trace in dict.fromkeys((r.model, r.trace) for r in rows):
        setup = setups[model]
        group = {r.policy: r for r in rows if r.model == model and r.trace == trace}
        a, b = _fixed(group, setup)
        deployed = setup.deployed.profile

        moved = group["frugal + re-planning"]
        checks = {
            "cheaper than the deploy-time choice": moved.cost_usd
            < group[f"frugal, fixed {deployed}"].cost_usd,
            "cheaper than both fixed": moved.cost_usd < min(a.cost_usd, b.cost_usd),
            "slo>=99%": moved.slo_attainment >= SLO_TARGET,
        }
        line = (
            f"{model} / {trace} (fixed SLO {100 * a.slo_attainment:.2f}% / {100 * b.slo_attainment:.2f}%; "
            f"the deploy-time plan picks {deployed}): re-planning {_against(moved, a, b, setup)}"
        )
        for label, policy in (
            ("priced with measured capacity", "frugal + re-planning, measured capacity"),
            ("with scale to zero", "frugal + re-planning, scale to zero"),
        ):
            if policy in group:
                line += f"; {label}: {_against(group[policy], a, b, setup)}"
        status = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items())
        found.append({"model": model, "trace": trace, "checks": checks, "line": f"{line} -> {status}"})
    return found


def _against(r: Result, a: Result, b: Result, setup: ReplanSetup) -> str:
    return (
        f"cost {r.cost_usd / a.cost_usd:.2f}x / {r.cost_usd / b.cost_usd:.2f}x and energy "
        f"{r.energy_kwh / a.energy_kwh:.2f}x / {r.energy_kwh / b.energy_kwh:.2f}x of fixed "
        f"{setup.measured.profile} / {setup.other.profile}, SLO {100 * r.slo_attainment:.2f}% "
        f"({r.notes['rollovers']} rollover(s): {_served(r)})"
    )


def _served(result: Result) -> str:
    hours = result.notes.get("serving_hours") or {}
    return ", ".join(f"{h:.1f} h on {label}" for label, h in hours.items())


def print_replanning(
    rows: list[Result], results: list[Result], setups: dict[str, ReplanSetup], window_s: float
) -> None:
    print(
        f"Re-planning (window {window_s:g} s, cooldown {2 * window_s:g} s, tolerance "
        f"{decide.COST_TOLERANCE:.0%}): the options, A = measured, B = modelled"
    )
    print()
    print(
        "| model | option | numbers | profiled capacity | within SLO up to | costPerHour | idle-max W | pod start | deploy-time plan |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for setup in setups.values():
        for o in option_rows(setup):
            print(
                f"| {o['model']} | {o['option']} | {o['source']} | {o['profiled_throughput_rps']:.0f} req/s | "
                f"{o['slo_capacity_rps']:.0f} req/s | {o['cost_per_hour']:g} | {o['idle_watts']:g}-{o['max_watts']:g} | "
                f"{o['start_s']:.2f} s | {'chosen' if o['deploy_time_choice'] else ''} |"
            )
    print()
    print(
        "| model | trace | policy | served on | rollovers | SLO attainment | cost USD | energy kWh | J/request "
        "| cost vs fixed A | cost vs fixed B | energy vs fixed A | energy vs fixed B | cost vs static |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        group = {x.policy: x for x in rows if x.model == r.model and x.trace == r.trace}
        a, b = _fixed(group, setups[r.model])
        static = next(x for x in results if (x.model, x.trace, x.policy) == (r.model, r.trace, "static"))
        served = _served(r) or r.policy.removeprefix("frugal, fixed ").split(",")[0]
        rollovers = r.notes.get("rollovers", "-")
        joules = r.energy_kwh * 3.6e6 / r.requests if r.requests else 0.0
        print(
            f"| {r.model} | {r.trace} | {r.policy} | {served} | {rollovers} | {100 * r.slo_attainment:.2f}% | "
            f"{r.cost_usd:.4f} | {r.energy_kwh:.4f} | {joules:.4f} | {r.cost_usd / a.cost_usd:.2f} | "
            f"{r.cost_usd / b.cost_usd:.2f} | {r.energy_kwh / a.energy_kwh:.2f} | {r.energy_kwh / b.energy_kwh:.2f} | "
            f"{r.cost_usd / static.cost_usd:.2f} |"
        )
    print()
    for verdict in replan_verdicts(rows, results, setups):
        print(verdict["line"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("digits", "minilm", "both"), default="both")
    parser.add_argument(
        "--trace", type=Path, action="append", help="t_seconds,rps CSV (repeatable; default: shipped)"
    )
    parser.add_argument(
        "--trace-unit",
        choices=("capacity", "rps"),
        default="capacity",
        help="capacity: rps column in multiples of one replica's measured SLO capacity (shipped traces)",
    )
    parser.add_argument("--measure", action="store_true", help="re-measure the replica on this machine")
    parser.add_argument("--hpa-cpu-target", type=float, default=0.7, help="HPA CPU utilisation target")
    parser.add_argument(
        "--keda-fraction",
        type=float,
        default=0.7,
        help="KEDA threshold as a share of one replica's SLO capacity",
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="measure once the 1-min load average is below this (<= 10 min)",
    )
    parser.add_argument(
        "--replan-window",
        type=float,
        default=replanning.DEFAULT_WINDOW_S,
        help="re-planning: seconds a cheaper option must win before a rollover (cooldown: twice that)",
    )
    parser.add_argument(
        "--replan-start-s",
        type=float,
        help="pod start of the modelled hardware's replicas (default: the measured replica's)",
    )
    parser.add_argument("--no-replanning", action="store_true", help="skip the re-planning rows")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--write-traces", action="store_true", help="regenerate benchmarks/traces/*.csv")
    args = parser.parse_args()
    if args.write_traces:
        write_traces()
    traces = args.trace or sorted(TRACES.glob("*.csv"))
    models = ["digits", "minilm"] if args.model == "both" else [args.model]
    datas = {model: measurements(model, args.measure, args.quiet_load) for model in models}
    summaries = [replica_summary(model, datas[model]) for model in models]
    both = {
        m: (
            replan_setup(m, datas[m], args.replan_start_s),
            replan_setup(m, datas[m], args.replan_start_s, True),
        )
        for m in ([] if args.no_replanning else models)
    }
    setups = {m: pair[0] for m, pair in both.items()}
    results: list[Result] = []
    replanned: list[Result] = []
    infos = []
    for model in models:
        for trace in traces:
            found, info, rows = run_all(model, datas[model], trace, args, both.get(model))
            results += found
            replanned += rows
            infos.append(info | {"model": model, "trace": trace.stem})
    if args.json:
        document = {
            "machine": {m: datas[m]["machine"] for m in models},
            "inputs": summaries,
            "scenarios": infos,
            "results": [r.as_dict() for r in results],
            "verdicts": verdicts(results),
        }
        if setups:
            document["replanning"] = {
                "window_s": args.replan_window,
                "cooldown_s": 2 * args.replan_window,
                "cost_tolerance": decide.COST_TOLERANCE,
                "options": [row for setup in setups.values() for row in option_rows(setup)],
                "results": [r.as_dict() for r in replanned],
                "verdicts": replan_verdicts(replanned, results, setups),
            }
        print(json.dumps(document, indent=1, default=float))
        return 0
    for model in models:
        m = datas[model]["machine"]
        print(
            f"{model}: measured {datas[model]['measured_at']} on {m['nproc']} x {m['cpu']} "
            f"(load average {m['loadavg_before']} before, {m['loadavg']} after)"
        )
    print()
    print_inputs(summaries, datas)
    print_results(results, infos)
    if setups:
        print_replanning(replanned, results, setups, args.replan_window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
