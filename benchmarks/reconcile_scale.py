"""Operator at scale: N ModelDeployments applied at once against a real API server.

    .venv/bin/python benchmarks/reconcile_scale.py [--count 200] [--interval 10]
    .venv/bin/python benchmarks/reconcile_scale.py --serving --count 1000 [--autoscale-interval 5] [--ticks 4]
                                                   [--drift]
    .venv/bin/python benchmarks/reconcile_scale.py --serving --clone --count 5000 --timeout 1800
    .venv/bin/python benchmarks/reconcile_scale.py --smoke      # seconds: --serving with 5, to see it runs

Starts etcd + kube-apiserver (+ kube-controller-manager) with the control-plane tier's harness,
applies the CRDs, one HardwareProfile and N ModelDeployments in one `kubectl apply`, runs the
operator as its own process, and prints: the time until every ModelDeployment reached its first
stable phase (Compressing: its compression Job exists and nobody runs it), API requests per reconcile
(from the operator's own metrics), and the operator's peak resident memory.

With ``--serving`` a real Prometheus runs too (the Prometheus tier's harness; no targets) and the
operator gets ``--prometheus-url`` and ``--autoscale-interval``. The benchmark then plays the Job
controller and the kubelet (``played_controllers.py``), as the control-plane tests do, to bring all N to phase Serving: the
compression and profiling Jobs of ``md-0000`` run for real (their commands, on this machine); every
other ModelDeployment gets a hard-linked copy of that generation's artifact directory where its own
Jobs would have written it (``<storage>/bench/<name>/gen-1``), then its compression Job and its
profiling Job are marked Complete and its serving Deployment ready, through the status subresource
(batched in threads). No kube-controller-manager runs in this mode, so nothing else writes those
statuses, and no server process runs: Prometheus has no series for the models, so the autoscaler
holds every count with MetricsAvailable=False. Once the first ticks have written that, a steady state
is measured over ``--ticks`` autoscaler ticks: API requests and writes per second (the operator's
counters, and the API server's own count over all clients), Prometheus queries per tick and per
second, and the mean tick duration. ``--clone`` brings only ``md-0000`` to Serving, stops the operator,
writes N-1 settled copies of it straight to the API server (``settled_clones.py``) and measures a
fresh operator starting on all N instead: what an operator restart, an upgrade or a failover meets.
``--drift`` adds one whole drift period (600 s): the one pass in
which every settled ModelDeployment is read and its children applied again, to undo hand edits.
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "controlplane"))

from controlplane_harness import CRD_DIR, ControlPlane, ensure_binaries, free_port
from played_controllers import (
    FIRST,
    NAMESPACE,
    PlayedControllers,
    bring_to_serving,
    complete_status,
    ready_status,
)

PROFILE = """apiVersion: frugal.dev/v1alpha1
kind: HardwareProfile
metadata: {name: bench-cpu}
spec:
  accelerator: {kind: cpu, model: x86-64, count: 1}
  costPerHour: "0.05"
  power: {idleWatts: 5, maxWatts: 15}
"""
MD = """---
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: md-{index:04d}, namespace: bench}}
spec:
  model: {{uri: "zoo://digits-mlp"}}
  compression: {{quantization: {{method: dynamic-int8}}}}
  serving: {{hardwareProfiles: [bench-cpu], slo: {{latencyP95Ms: 50}}}}
"""
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
WRITES_TARGET = 5.0  # API writes per second, steady state
# --smoke: every stage of --serving, at sizes that take seconds (the numbers mean nothing).
SMOKE = {"count": 5, "interval": 2.0, "timeout": 180.0, "serving": True, "autoscale_interval": 1.0,
         "ticks": 2, "scrape_interval": 1.0}  # fmt: skip


# The tier's API server hands out Service IPs from a /24 (254): 1,000 served ModelDeployments need two
# ClusterIP Services each (the shard's and the endpoint's).
SERVICE_RANGE = "10.96.0.0/16"


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phases(cluster: ControlPlane) -> list[str]:
    items = json.loads(cluster.kubectl("get", "md", "-n", "bench", "-o", "json").stdout)["items"]
    return [(i.get("status") or {}).get("phase", "") for i in items]


def scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())


# -- steady state (--serving) ---------------------------------------------------------------------------


def apiserver_requests(cluster: ControlPlane) -> tuple[float, float, float]:
    """The API server's own count of resource requests from every client (its lease renewals left
    out): (all, writes, when: the middle of the request that read them)."""
    asked = time.monotonic()
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    when = (asked + time.monotonic()) / 2
    total = writes = 0.0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if not labels.get("resource") or labels["resource"] == "leases":
            continue
        value = float(line.rsplit(" ", 1)[1])
        total += value
        if labels.get("verb") in WRITE_VERBS:
            writes += value
    return total, writes, when


def next_tick(port: int, after: float, deadline: float) -> tuple[str, float]:
    """Poll the operator's metrics until an autoscaler tick beyond `after` has finished."""
    while True:
        text = scrape(port)
        if metric(text, "frugal_autoscaler_tick_duration_seconds_count") > after:
            return text, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no autoscaler tick finished after tick {after:.0f}")
        time.sleep(0.2)


def ticks_over(text: str, interval: float) -> tuple[float, float] | None:
    """(ticks longer than `interval`, all ticks) so far, when `interval` is a bucket bound."""
    bucket = metric(text, f'frugal_autoscaler_tick_duration_seconds_bucket{{le="{interval:.1f}"}}')
    count = metric(text, "frugal_autoscaler_tick_duration_seconds_count")
    if not re.search(rf'le="{interval:.1f}"', text):
        return None
    return count - bucket, count


def settle(port: int, interval: float, timeout: float) -> tuple[float, bool]:
    """Wait until one whole tick passes without an API write or a reconcile (the first ticks write
    MetricsAvailable for every model; kopf may still work through a backlog of child events); returns
    (seconds waited, whether they stopped)."""
    quiet = ("frugal_operator_api_writes_total", "frugal_operator_reconcile_duration_seconds_count")
    started = time.monotonic()
    deadline = started + timeout
    text, _ = next_tick(port, metric(scrape(port), "frugal_autoscaler_tick_duration_seconds_count"), deadline)
    while time.monotonic() < deadline:
        ticks = metric(text, "frugal_autoscaler_tick_duration_seconds_count")
        before = [metric(text, name) for name in quiet]
        text, _ = next_tick(port, ticks, deadline + 4 * interval)
        if [metric(text, name) for name in quiet] == before:
            return time.monotonic() - started, True
    return time.monotonic() - started, False


def steady_state(cluster: ControlPlane, port: int, ticks: int, interval: float) -> dict[str, float]:
    """Counters over `ticks` whole autoscaler ticks, from the end of one tick to the end of another."""
    deadline = time.monotonic() + (ticks + 4) * interval * 10
    first, t0 = next_tick(
        port, metric(scrape(port), "frugal_autoscaler_tick_duration_seconds_count"), deadline
    )
    server0 = apiserver_requests(cluster)
    start_count = metric(first, "frugal_autoscaler_tick_duration_seconds_count")
    last, t1 = next_tick(port, start_count + ticks - 1, deadline)
    server1 = apiserver_requests(cluster)
    window = t1 - t0

    def delta(name: str) -> float:
        return metric(last, name) - metric(first, name)

    done = delta("frugal_autoscaler_tick_duration_seconds_count")
    queries = delta("frugal_autoscaler_prometheus_queries_total")
    return {
        "window": window,
        "ticks": done,
        "requests": delta("frugal_operator_api_requests_total") / window,
        "writes": delta("frugal_operator_api_writes_total") / window,
        "queries_per_tick": queries / max(done, 1),
        "queries": queries / window,
        "tick_ms": 1000 * delta("frugal_autoscaler_tick_duration_seconds_sum") / max(done, 1),
        "reconciles": delta("frugal_operator_reconcile_duration_seconds_count"),
        "server_requests": (server1[0] - server0[0]) / (server1[2] - server0[2]),
        "server_writes": (server1[1] - server0[1]) / (server1[2] - server0[2]),
    }


def drift_period(port: int, seconds: float) -> dict[str, float]:
    """Counters over `seconds` (one drift period and more: every settled ModelDeployment gets its one
    full reconcile, which re-applies its children), sampled at every tick for the busiest tick."""
    deadline = time.monotonic() + seconds * 2
    text, t0 = next_tick(
        port, metric(scrape(port), "frugal_autoscaler_tick_duration_seconds_count"), deadline
    )
    first, previous, busiest = (text, t0), (text, t0), 0.0
    while previous[1] - t0 < seconds:
        count = metric(previous[0], "frugal_autoscaler_tick_duration_seconds_count")
        current = next_tick(port, count, deadline)
        writes = metric(current[0], "frugal_operator_api_writes_total")
        writes -= metric(previous[0], "frugal_operator_api_writes_total")
        busiest = max(busiest, writes / (current[1] - previous[1]))
        previous = current
    window = previous[1] - t0

    def delta(name: str) -> float:
        return metric(previous[0], name) - metric(first[0], name)

    return {
        "window": window,
        "requests": delta("frugal_operator_api_requests_total") / window,
        "writes": delta("frugal_operator_api_writes_total") / window,
        "busiest_writes": busiest,
        "reconciles": delta("frugal_operator_reconcile_duration_seconds_count"),
        "ticks": delta("frugal_autoscaler_tick_duration_seconds_count"),
    }


def metrics_unavailable(played: PlayedControllers) -> int:
    """How many ModelDeployments carry MetricsAvailable=False."""
    from frugal.operator.api.crds import API_VERSION

    count = 0
    for md in played.api.find(API_VERSION, "ModelDeployment", NAMESPACE, {}):
        for condition in (md.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "MetricsAvailable" and condition.get("status") == "False":
                count += 1
    return count


def wait_watchable(cluster: ControlPlane, timeout: float = 60.0) -> None:
    """Wait until every CRD's resource can be watched: Established comes before the API server's watch
    cache for it is ready, and an operator started in between logs a 429 ("storage is (re)initializing")
    per resource before kopf retries, which would count among the operator log's errors below."""
    import yaml

    deadline = time.monotonic() + timeout
    for path in sorted(Path(CRD_DIR).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())["spec"]
        served = next(v["name"] for v in spec["versions"] if v.get("served"))
        url = f"/apis/{spec['group']}/{served}/{spec['names']['plural']}?watch=true&timeoutSeconds=1"
        while cluster.kubectl("get", "--raw", url, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} cannot be watched after {timeout:.0f} s")
            time.sleep(0.2)


def log_problems(log: Path, limit: int = 20) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)][:limit]


def stop_operator(operator: subprocess.Popen[bytes]) -> None:
    operator.send_signal(signal.SIGINT)
    try:
        operator.wait(30)
    except subprocess.TimeoutExpired:
        print("the operator did not stop within 30 s of SIGINT: killed", file=sys.stderr)
        operator.kill()
        operator.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def clone_and_restart(
    played: PlayedControllers, count: int, argv: list[str], env: Mapping[str, str], log_path: Path, port: int
) -> dict[str, Any]:
    """--clone: with the operator stopped, write the settled copies and their artifacts, then start a
    fresh operator on all `count` (its log appended to the first one's)."""
    from settled_clones import clone

    started = time.monotonic()
    written = clone(
        played.api, NAMESPACE, FIRST, count, {"Job": lambda _: complete_status(), "Deployment": ready_status}
    )
    played.copy_artifacts(count)
    cloned = time.monotonic() - started
    log = log_path.open("ab")
    operator = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:  # its /metrics answers once it has started
        try:
            scrape(port)
            break
        except OSError:
            if time.monotonic() > deadline or operator.poll() is not None:
                raise RuntimeError("the restarted operator's /metrics never answered") from None
            time.sleep(0.5)
    return {"operator": operator, "cloned": cloned, "objects": written}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--interval", type=float, default=10.0, help="the operator's resync interval")
    parser.add_argument("--timeout", type=float, default=600.0, help="per stage")
    parser.add_argument(
        "--serving", action="store_true", help="bring all N to Serving and measure the steady state"
    )
    parser.add_argument("--autoscale-interval", type=float, default=5.0, help="with --serving")
    parser.add_argument("--ticks", type=int, default=4, help="autoscaler ticks in the steady-state window")
    parser.add_argument(
        "--drift",
        action="store_true",
        help="with --serving: also measure one whole drift period (the reconciler's DRIFT_SECONDS, 600 s, "
        "and two resyncs), in which every settled ModelDeployment is reconciled and re-applied once",
    )
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus' (with --serving)")
    parser.add_argument(
        "--clone",
        action="store_true",
        help="with --serving: bring only md-0000 to Serving, stop the operator, write N-1 settled copies of "
        "it straight to the API server (benchmarks/settled_clones.py), and measure a fresh operator that "
        "starts on N settled ModelDeployments: its time to settle, its peak and its settled memory",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a check that the benchmark runs (about 30 s): --serving with 5 ModelDeployments, 1 s intervals, "
        "2 ticks (flags given as well still apply)",
    )
    if "--smoke" in sys.argv[1:]:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args()
    if args.smoke and args.drift:
        parser.error("--drift measures a 600 s period: not with --smoke")
    if args.clone and not args.serving:
        parser.error("--clone needs --serving")
    applied_count = 1 if args.clone else args.count
    with tempfile.TemporaryDirectory(prefix="frugal-bench-") as tmp:
        # --serving plays the Job and deployment controllers itself: nothing else may write the statuses.
        cluster = ControlPlane(
            ensure_binaries(),
            Path(tmp) / "cp",
            with_controller_manager=not args.serving,
            service_cluster_ip_range=SERVICE_RANGE,
        )
        cluster.start()
        operator: subprocess.Popen[bytes] | None = None
        prometheus: Any = None
        played: PlayedControllers | None = None
        log_path = Path(tmp) / "operator.log"
        try:
            cluster.kubectl("apply", "-f", CRD_DIR)
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", CRD_DIR)
            wait_watchable(cluster)
            cluster.kubectl("create", "namespace", "bench")
            cluster.kubectl("apply", "-f", "-", input=PROFILE)
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "frugal.operator.cluster.operator_command",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--allow-host-path",  # file:// storage: a directory of this machine, as in the tier's tests
                "--storage-uri",
                f"file://{tmp}/artifacts",
                "--metrics-port",
                str(port),
                "--metrics-host",
                "127.0.0.1",
                "--health-port",
                "0",
                "--interval",
                str(args.interval),
                "--log-level",
                "WARNING",
            ]
            if args.serving:
                from prometheus_harness import Prometheus

                prometheus = Prometheus(Path(tmp) / "prometheus", interval_s=args.scrape_interval)
                prometheus.start()
                argv += [
                    "--prometheus-url",
                    prometheus.url,
                    "--autoscale-interval",
                    str(args.autoscale_interval),
                ]
            log = log_path.open("wb")
            operator = subprocess.Popen(argv, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
            time.sleep(3)  # the operator is watching before the burst arrives
            started = time.monotonic()
            cluster.kubectl(
                "apply", "-f", "-", input="".join(MD.format(index=i) for i in range(applied_count))
            )
            applied = time.monotonic() - started
            while time.monotonic() - started < args.timeout:
                current = phases(cluster)
                if len(current) == applied_count and all(p == "Compressing" for p in current):
                    break
                time.sleep(1)
            else:
                print(
                    f"timed out: {sum(p == 'Compressing' for p in phases(cluster))}/{applied_count} Compressing"
                )
                return 1
            stable = time.monotonic() - started
            time.sleep(args.interval * 2)  # a few resyncs of settled objects, counted too
            text = scrape(port)
            reconciles = metric(text, "frugal_operator_reconcile_duration_seconds_count")
            requests = metric(text, "frugal_operator_api_requests_total")
            duration = metric(text, "frugal_operator_reconcile_duration_seconds_sum")
            print(f"ModelDeployments                     {applied_count}")
            print(f"kubectl apply of all of them         {applied:.1f} s")
            print(f"time until all Compressing           {stable:.1f} s")
            print(f"reconciles (incl. {args.interval:g}s resyncs)      {reconciles:.0f}")
            print(f"API requests per reconcile           {requests / max(reconciles, 1):.1f}")
            print(f"mean reconcile duration              {1000 * duration / max(reconciles, 1):.1f} ms")
            print(f"operator peak RSS                    {peak_rss_mib(operator.pid):.0f} MiB", flush=True)
            if not args.serving:
                return 0

            played = PlayedControllers(cluster, Path(tmp) / "artifacts", Path(tmp))
            took = bring_to_serving(played, applied_count, args.timeout)
            if args.clone:
                stop_operator(operator)
                restarted = clone_and_restart(played, args.count, argv, cluster.env, log_path, port)
                operator = restarted.pop("operator")
            waited, quiet = settle(port, args.autoscale_interval, args.timeout)
            unavailable = metrics_unavailable(played)
            steady = steady_state(cluster, port, args.ticks, args.autoscale_interval)
            over = ticks_over(scrape(port), args.autoscale_interval)
            every = f"every {args.autoscale_interval:g} s"
            print(
                f"{FIRST} compression + profiling (real)  {took['compress']:.1f} s + {took['profile']:.1f} s"
            )
            if args.clone:
                print(
                    f"{args.count - 1} settled copies written         {restarted['cloned']:.1f} s "
                    f"({restarted['objects']:.0f} objects)"
                )
            else:
                print(
                    f"then all {args.count} Serving               {took['others']:.1f} s (Job/kubelet played)"
                )
            print(
                f"MetricsAvailable=False               {unavailable}/{args.count} (no series in Prometheus)"
            )
            print(
                f"writes and reconciles stopped after  {waited:.1f} s"
                + ("" if quiet else " (did NOT stop)")
                + (" of the restarted operator's start" if args.clone else "")
            )
            if args.clone:
                print(f"restarted operator RSS, settled      {rss_mib(operator.pid):.0f} MiB")
            print(
                f"steady state: window                 {steady['window']:.1f} s, {steady['ticks']:.0f} ticks {every}"
            )
            print(f"steady state: API requests/s         {steady['requests']:.2f}")
            print(f"steady state: API writes/s           {steady['writes']:.2f} (target < {WRITES_TARGET:g})")
            print(
                f"steady state: Prometheus queries per tick  {steady['queries_per_tick']:.1f} (target: constant)"
            )
            print(f"steady state: Prometheus queries/s   {steady['queries']:.2f}")
            print(f"steady state: autoscaler tick duration  {steady['tick_ms']:.0f} ms mean ({every})")
            print(f"steady state: reconciles in window   {steady['reconciles']:.0f}")
            print(
                f"steady state: API server, all clients  {steady['server_requests']:.2f} requests/s, "
                f"{steady['server_writes']:.2f} writes/s"
            )
            if over is not None:
                print(f"ticks longer than the interval       {over[0]:.0f} of {over[1]:.0f} (whole run)")
            sys.stdout.flush()
            if args.drift:
                from frugal.operator.control.reconciler import DRIFT_SECONDS

                drift = drift_period(port, DRIFT_SECONDS + 2 * args.interval + args.autoscale_interval)
                print(
                    f"drift period: window                 {drift['window']:.0f} s, {drift['ticks']:.0f} ticks"
                )
                print(f"drift period: reconciles             {drift['reconciles']:.0f}")
                print(f"drift period: API requests/s         {drift['requests']:.2f} (mean)")
                print(
                    f"drift period: API writes/s           {drift['writes']:.2f} (mean; target < {WRITES_TARGET:g})"
                )
                print(f"drift period: API writes/s, busiest tick  {drift['busiest_writes']:.2f}")
                if (over := ticks_over(scrape(port), args.autoscale_interval)) is not None:
                    print(f"ticks longer than the interval       {over[0]:.0f} of {over[1]:.0f} (whole run)")
            print(f"operator peak RSS ({args.count} Serving)     {peak_rss_mib(operator.pid):.0f} MiB")
            problems = log_problems(log_path)
            print(
                f"operator log: warnings/errors        {len(problems)}"
                + (" (first ones below)" if problems else "")
            )
            for line in problems:
                print(f"  {line}")
        finally:
            if played is not None:
                played.close()
            try:
                if operator is not None:
                    stop_operator(operator)
            finally:
                if prometheus is not None:
                    prometheus.stop()
                cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
