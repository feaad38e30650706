"""The Job controller and the kubelet, played for `reconcile_scale.py --serving`: N ModelDeployments
brought to Serving through the status subresource, the first one's Jobs run for real."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "controlplane"))

from controlplane_harness import ControlPlane

NAMESPACE = "bench"
FIRST = "md-0000"  # the ModelDeployment whose Jobs run for real in --serving mode

# -- playing the Job controller and the kubelet (--serving) -------------------------------------------


def job_finished(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def deployment_ready(deployment: Mapping[str, Any]) -> bool:
    status = deployment.get("status") or {}
    replicas = int(deployment["spec"].get("replicas", 1))
    return (
        status.get("observedGeneration") == deployment["metadata"].get("generation")
        and status.get("readyReplicas") == replicas
        and status.get("availableReplicas") == replicas
    )


def complete_status() -> dict[str, Any]:
    """What the Job controller writes once a Job's one pod succeeded (the control-plane tier's
    ``operator_harness.complete_job`` writes the same, one kubectl call at a time)."""
    from operator_harness import now

    stamp = now()
    return {
        "startTime": stamp, "completionTime": stamp, "active": 0, "ready": 0, "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": ""},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": ""},
        ],
    }  # fmt: skip


def ready_status(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """What the deployment controller writes once every replica is ready (no pods exist here)."""
    replicas = int(deployment["spec"].get("replicas", 1))
    return {
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "observedGeneration": deployment["metadata"]["generation"],
    }


class PlayedControllers:
    """The Job controller and the kubelet, for N ModelDeployments, through the status subresource."""

    def __init__(self, cluster: ControlPlane, storage: Path, workdir: Path, threads: int = 8) -> None:
        from frugal.operator.cluster.apply import Cluster
        from frugal.operator.manifests import names

        self.api = Cluster(cluster.api_client())
        self.names = names
        self.storage, self.workdir = storage, workdir
        self.pool = ThreadPoolExecutor(threads)
        self.patched = 0

    def children(self, api_version: str, kind: str, role: str) -> list[dict[str, Any]]:
        selector = {self.names.LABEL_MANAGED_BY: self.names.MANAGED_BY, self.names.LABEL_ROLE: role}
        return self.api.find(api_version, kind, NAMESPACE, selector)

    def owner(self, obj: Mapping[str, Any]) -> str:
        return str(obj["metadata"]["labels"][self.names.LABEL_MD])

    def run_for_real(self, role: str, deadline: float) -> float:
        """Wait for FIRST's `role` Job, run its command as a pod would, record the outcome."""
        from operator_harness import run_job_command

        while True:
            jobs = [j for j in self.children("batch/v1", "Job", role) if self.owner(j) == FIRST]
            if jobs:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {role} Job for {FIRST}")
            time.sleep(0.5)
        job = jobs[0]
        started = time.monotonic()
        proc = run_job_command(job, self.workdir)
        took = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{job['metadata']['name']} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        self._patch_status("batch/v1", "Job", job["metadata"]["name"], complete_status())
        return took

    def copy_artifacts(self, count: int) -> None:
        """FIRST's generation-1 artifacts, hard-linked where every other one's Jobs would write them."""
        source = self.storage / NAMESPACE / FIRST / "gen-1"
        for index in range(1, count):
            target = self.storage / NAMESPACE / f"md-{index:04d}" / "gen-1"
            shutil.rmtree(target, ignore_errors=True)  # a compression Job that never ran left it empty
            shutil.copytree(source, target, copy_function=os.link)

    def step(self) -> tuple[int, int]:
        """Complete every unfinished Job and ready every unready serving Deployment (one pass);
        returns (Jobs, Deployments) patched."""
        jobs = [
            j
            for role in ("compression", "profiling")
            for j in self.children("batch/v1", "Job", role)
            if not job_finished(j)
        ]
        deployments = [
            d for d in self.children("apps/v1", "Deployment", "serving") if not deployment_ready(d)
        ]
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("batch/v1", "Job", j["metadata"]["name"], complete_status()) for j in jobs
        ]
        calls += [("apps/v1", "Deployment", d["metadata"]["name"], ready_status(d)) for d in deployments]
        list(self.pool.map(lambda c: self._patch_status(c[0], c[1], c[2], c[3], check=False), calls))
        return len(jobs), len(deployments)

    def _patch_status(
        self, api_version: str, kind: str, name: str, status: Mapping[str, Any], check: bool = True
    ) -> None:
        from frugal.operator.cluster.apply import ApiError

        try:
            self.api.patch_status(api_version, kind, NAMESPACE, name, status)
            self.patched += 1
        except ApiError:
            if check:
                raise  # otherwise the next pass tries again

    def phases(self) -> dict[str, str]:
        from frugal.operator.api.crds import API_VERSION

        return {
            md["metadata"]["name"]: (md.get("status") or {}).get("phase", "")
            for md in self.api.find(API_VERSION, "ModelDeployment", NAMESPACE, {})
        }

    def close(self) -> None:
        self.pool.shutdown()


def bring_to_serving(played: PlayedControllers, count: int, timeout: float) -> dict[str, float]:
    started = time.monotonic()
    deadline = started + timeout
    compress_s = played.run_for_real("compression", deadline)
    profile_s = played.run_for_real("profiling", deadline)
    played.copy_artifacts(count)
    others = time.monotonic()
    while True:
        current = played.phases()
        if len(current) == count and all(p == "Serving" for p in current.values()):
            break
        if time.monotonic() > deadline:
            tally: dict[str, int] = {}
            for phase in current.values():
                tally[phase or "(none)"] = tally.get(phase or "(none)", 0) + 1
            raise TimeoutError(f"not all Serving after {timeout:.0f} s: {tally}")
        played.step()
        time.sleep(1.0)
    done = time.monotonic()
    return {
        "compress": compress_s,
        "profile": profile_s,
        "others": done - others,
        "total": done - started,
    }
