"""Operator at scale: N ModelDeployments applied at once against a real API server.

    .venv/bin/python benchmarks/reconcile_scale.py [--count 200] [--interval 10]

Starts etcd + kube-apiserver (+ kube-controller-manager) with the control-plane tier's harness,
applies the CRDs, one HardwareProfile and N ModelDeployments in one `kubectl apply`, runs the
operator as its own process, and prints: the time until every ModelDeployment reached its first
stable phase (Compressing: its compression Job exists and nobody runs it), API requests per reconcile
(from the operator's own metrics), and the operator's peak resident memory.
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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "controlplane"))

from controlplane_harness import CRD_DIR, ControlPlane, ensure_binaries, free_port

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--interval", type=float, default=10.0, help="the operator's resync interval")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="frugal-bench-") as tmp:
        cluster = ControlPlane(ensure_binaries(), Path(tmp) / "cp")
        cluster.start()
        operator: subprocess.Popen[bytes] | None = None
        try:
            cluster.kubectl("apply", "-f", CRD_DIR)
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", CRD_DIR)
            cluster.kubectl("create", "namespace", "bench")
            cluster.kubectl("apply", "-f", "-", input=PROFILE)
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "frugal.operator.cluster.operator_command",
                "--kubeconfig",
                str(cluster.kubeconfig),
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
            log = (Path(tmp) / "operator.log").open("wb")
            operator = subprocess.Popen(argv, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
            time.sleep(3)  # the operator is watching before the burst arrives
            started = time.monotonic()
            cluster.kubectl("apply", "-f", "-", input="".join(MD.format(index=i) for i in range(args.count)))
            applied = time.monotonic() - started
            while time.monotonic() - started < args.timeout:
                current = phases(cluster)
                if len(current) == args.count and all(p == "Compressing" for p in current):
                    break
                time.sleep(1)
            else:
                print(
                    f"timed out: {sum(p == 'Compressing' for p in phases(cluster))}/{args.count} Compressing"
                )
                return 1
            stable = time.monotonic() - started
            time.sleep(args.interval * 2)  # a few resyncs of settled objects, counted too
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            reconciles = metric(text, "frugal_operator_reconcile_duration_seconds_count")
            requests = metric(text, "frugal_operator_api_requests_total")
            duration = metric(text, "frugal_operator_reconcile_duration_seconds_sum")
            print(f"ModelDeployments                     {args.count}")
            print(f"kubectl apply of all of them         {applied:.1f} s")
            print(f"time until all Compressing           {stable:.1f} s")
            print(f"reconciles (incl. {args.interval:g}s resyncs)      {reconciles:.0f}")
            print(f"API requests per reconcile           {requests / max(reconciles, 1):.1f}")
            print(f"mean reconcile duration              {1000 * duration / max(reconciles, 1):.1f} ms")
            print(f"operator peak RSS                    {peak_rss_mib(operator.pid):.0f} MiB")
        finally:
            if operator is not None:
                operator.send_signal(signal.SIGINT)
                operator.wait(30)
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
