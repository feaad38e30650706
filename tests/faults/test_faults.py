"""Faults injected into a served model's surroundings: what the user sees, what is lost (the goal is
nothing), and how long until it converges.

One digits model is served for the module (two replicas, autoscaled through a real Prometheus, the
kubelet and the endpoint Service played by `played_serving`), under an open-loop client of
``RATE_RPS`` that records every answer. Each case breaks one part for real, checks what the
ModelDeployment's status, its Events and the client saw, and prints
``fault: NAME converged_s=... failed_requests=...``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    autoscaled_namespace,
    condition,
    create_namespace,
    events_for,
    get,
    kubectl_json,
    run_and_finish,
    status_of,
    wait_for,
    wait_object,
    wait_ticks,
)
from played_serving import Load, PlayedKubelet
from prometheus_harness import Prometheus

from frugal.operator.manifests.jobs import BACKOFF_LIMIT

NAME = "digits-faults"
RATE_RPS = 10.0
WINDOW_S = 4  # stabilizationWindowSeconds: short, so a scale-down would show within a case
OUTAGE_S = 30.0
# How long the operator may take to act on the API server once it is back (kopf's watches back off).
RESUME_TIMEOUT_S = 120.0
FULL = "digits-full"
FULL_VOLUME = "64k"  # smaller than the digits variants' ONNX files


def manifests(name: str, prometheus_url: str, min_replicas: int = 2) -> str:
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    md = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = name
    md["spec"]["autoscaling"] = {
        "minReplicas": min_replicas,
        "maxReplicas": 3,
        "stabilizationWindowSeconds": WINDOW_S,
        "prometheus": {"url": prometheus_url},
        "replanning": {"enabled": False},
    }
    return yaml.safe_dump_all(documents)


@dataclass
class Plant:
    operator: Operator
    prometheus: Prometheus
    kubelet: PlayedKubelet
    namespace: str
    work: Path

    @property
    def cluster(self) -> ControlPlane:
        return self.operator.cluster

    def synced(self, check: Any) -> Any:
        """`check()` after the played kubelet caught up with what the operator wrote."""
        self.kubelet.sync()
        return check()

    def status(self) -> dict[str, Any]:
        return status_of(self.cluster, self.namespace, NAME)

    def replicas(self) -> int:
        deployment = get(self.cluster, "deployment", self.namespace, f"{NAME}-g1-shard-0") or {}
        return int(deployment.get("spec", {}).get("replicas", 0))

    def patch(self, spec: dict[str, Any], name: str = NAME) -> int:
        """Merge `spec` into the ModelDeployment's spec; returns its new metadata.generation."""
        proc = self.cluster.kubectl("patch", "md", name, "-n", self.namespace, "--type=merge", "-p",
                                    json.dumps({"spec": spec}), "-o", "json")  # fmt: skip
        return int(json.loads(proc.stdout)["metadata"]["generation"])


@pytest.fixture(scope="module")
def plant(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    """The digits model served (two replicas) by the operator, Prometheus scraping its servers."""
    work = tmp_path_factory.mktemp("faults")
    with autoscaled_namespace(crds_installed, work, "faults", ["--rate-window", "10s"]) as (
        operator,
        prometheus,
        namespace,
    ):
        kubelet = PlayedKubelet(crds_installed, prometheus, namespace, work, NAME)
        try:
            crds_installed.kubectl("apply", "-n", namespace, "-f", "-", input=manifests(NAME, prometheus.url))
            for job in (f"{NAME}-g1-compress", f"{NAME}-g1-profile-local-cpu"):
                proc = run_and_finish(
                    crds_installed, wait_object(crds_installed, operator, "job", namespace, job), work
                )
                assert proc.returncode == 0, proc.stderr[-3000:]
            found = Plant(operator, prometheus, kubelet, namespace, work)
            wait_for("phase Serving on two replicas",
                     lambda: found.synced(lambda: found.status().get("phase") == "Serving" and kubelet.running(
                         f"{NAME}-g1-shard-0") == 2), operator)  # fmt: skip
            yield found
        finally:
            kubelet.stop()


def failed(load: Load) -> list[tuple[str | None, int]]:
    return [answer for answer in load.answers if answer[1] != 200]


def metrics_available(plant: Plant, wanted: str) -> dict[str, Any] | None:
    status = plant.status()
    return status if condition(status, "MetricsAvailable").get("status") == wanted else None


def test_api_server_stopped_for_30_s(plant: Plant) -> None:
    """Fault: kube-apiserver stopped for 30 s (etcd, the controller-manager, the operator, Prometheus and
    the model's servers keep running), then started again on its port with its flags.

    What the user sees: during the outage nothing (kubectl fails; the model answers: the data path
    never asks the API server); the operator keeps running and logs its failed calls. What is lost:
    nothing — no request fails, the operator does not exit. Time to converge: a spec change
    (spec.autoscaling.maxReplicas) made after the restart is observed (status.observedGeneration), and a
    new ModelDeployment's compression Job created, within RESUME_TIMEOUT_S; the printed line has both.
    """
    cluster, operator, ns = plant.cluster, plant.operator, plant.namespace
    assert operator.proc is not None
    with Load(plant.kubelet, RATE_RPS) as load:
        wait_for("requests answered", lambda: len(load.answers) >= 10, operator)
        cluster.stop_apiserver()
        try:
            time.sleep(OUTAGE_S)  # the outage's length is the fault
            during = len(load.answers)
        finally:
            cluster.start_apiserver()  # whatever happens, the next case finds it running
        back = time.monotonic()
        assert operator.proc.poll() is None, (
            f"the operator exited {operator.proc.returncode}:\n{operator.tail()}"
        )
        generation = plant.patch({"autoscaling": {"maxReplicas": 4}})
        observed = wait_for(
            "the maxReplicas edit observed",
            lambda: plant.status().get("observedGeneration") == generation and time.monotonic(),
            operator,
            timeout_s=RESUME_TIMEOUT_S,
        )
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifests(f"{NAME}-after", plant.prometheus.url))
        applied = time.monotonic()
        wait_object(cluster, operator, "job", ns, f"{NAME}-after-g1-compress")
        job_s = time.monotonic() - applied
        wait_for("requests after the restart", lambda: plant.synced(lambda: len(load.answers) >= during + 20),
                 operator)  # fmt: skip
    cluster.kubectl("delete", "md", f"{NAME}-after", "-n", ns, "--wait=false")
    converged_s = observed - back
    print(f"\nfault: api-server-down-{OUTAGE_S:.0f}s converged_s={converged_s:.1f} new_job_s={job_s:.1f} "
          f"failed_requests={len(failed(load))} requests={len(load.answers)} operator_alive=True")  # fmt: skip
    assert not failed(load), failed(load)[:10]
    assert during > 0.5 * RATE_RPS * OUTAGE_S, f"only {during} requests by the end of the outage"
    assert operator.proc is not None and operator.proc.poll() is None, operator.tail()
    assert plant.replicas() == 2 and plant.status().get("phase") == "Serving"


def test_prometheus_stopped_holds_the_replicas_and_says_so(plant: Plant) -> None:
    """Fault: Prometheus stopped while the model serves two replicas and spec.autoscaling.minReplicas is
    lowered to 1 (with metrics, a scale-down after the stabilisation window).

    What the user sees: MetricsAvailable=False (reason MetricsStale, the message names the Prometheus
    URL), status.autoscaling.reason MetricsStale, a Warning Event MetricsStale; the replica count holds at
    2 however long the metrics are missing. What is lost: nothing — no request fails, no replica is
    taken away. Time to converge: MetricsAvailable=False within a few autoscaler ticks of the stop
    (detect_s), True again within seconds of Prometheus answering (recover_s).
    """
    cluster, operator, prometheus = plant.cluster, plant.operator, plant.prometheus
    wait_for(
        "MetricsAvailable=True", lambda: plant.synced(lambda: metrics_available(plant, "True")), operator
    )
    assert plant.replicas() == 2
    with Load(plant.kubelet, RATE_RPS) as load:
        wait_for("requests answered", lambda: len(load.answers) >= 10, operator)
        prometheus.stop()
        try:
            stopped = time.monotonic()
            plant.patch({"autoscaling": {"minReplicas": 1}})
            stale = wait_for("MetricsAvailable=False", lambda: metrics_available(plant, "False"), operator)
            detect_s = time.monotonic() - stopped
            wait_ticks(operator, WINDOW_S + 4)  # 1 s ticks well past the window: nothing scales down
            held = plant.replicas()
        finally:
            prometheus.start()
        started = time.monotonic()
        wait_for("MetricsAvailable=True", lambda: metrics_available(plant, "True"), operator)
        recover_s = time.monotonic() - started
    events = [e for e in events_for(cluster, plant.namespace, NAME) if e["reason"] == "MetricsStale"]
    print(f"\nfault: prometheus-down detect_s={detect_s:.1f} recover_s={recover_s:.1f} replicas_held={held} "
          f"failed_requests={len(failed(load))} requests={len(load.answers)}")  # fmt: skip
    assert not failed(load), failed(load)[:10]
    assert held == 2, "the autoscaler scaled down without metrics"
    metrics = condition(stale, "MetricsAvailable")
    assert metrics["reason"] == "MetricsStale" and prometheus.url in metrics["message"], metrics
    assert stale["autoscaling"]["reason"] == "MetricsStale", stale["autoscaling"]
    assert events and all(e["type"] == "Warning" for e in events), events
    # Leave the model as the module found it: two replicas, served.
    plant.patch({"autoscaling": {"minReplicas": 2}})
    wait_for("two replicas again", lambda: plant.synced(lambda: plant.replicas() == 2 and plant.kubelet.running(
        f"{NAME}-g1-shard-0") == 2), operator)  # fmt: skip


def artifact_files(volume: Path) -> list[Path]:
    return sorted(path for path in volume.rglob("*") if path.is_file())


def test_a_full_artifacts_volume_fails_the_compression_job_and_says_why(plant: Plant, tmp_path: Path) -> None:
    """Fault: the artifacts volume is full — a 64 KiB tmpfs mounted where this namespace's compression
    Jobs write (``<storage>/<namespace>``), smaller than the variants.

    What the user sees: the Job's pod fails (exit 1, retried BACKOFF_LIMIT times: space may be freed
    meanwhile), then phase Failed, Compressed=False CompressionFailed and a Warning Event whose message
    says "no space left on the artifacts volume", names the directory it was writing and what to do
    (free space or enlarge the volume, then delete the Job to run it again); no traceback. What is lost:
    nothing half-written is taken for an artifact — no file is left on the volume after any attempt (the
    artifact is staged and renamed into place only when complete). Time to converge: failed_s from the
    first attempt to phase Failed (the Job controller's back-off, 10 s then 20 s, dominates); once the
    volume has room and the Job is deleted, the recreated Job's run makes Compressed=True (retry_s).
    """
    cluster, operator = plant.cluster, plant.operator
    ns = create_namespace(cluster, "faults-full")
    volume = operator.storage / ns
    volume.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_VOLUME}", "tmpfs", str(volume)], check=True)
    job_name = f"{FULL}-g1-compress"
    try:
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifests(FULL, plant.prometheus.url, 1))
        job = wait_object(cluster, operator, "job", ns, job_name)
        started = time.monotonic()
        for attempt in range(BACKOFF_LIMIT + 1):
            proc = run_and_finish(cluster, job, tmp_path)
            assert proc.returncode == 1, (attempt, proc.returncode, proc.stderr[-3000:])
            assert (
                "no space left on the artifacts volume" in proc.stderr and "Traceback" not in proc.stderr
            ), proc.stderr[-3000:]
            assert artifact_files(volume) == [], f"attempt {attempt + 1} left files behind"
            if attempt < BACKOFF_LIMIT:
                assert status_of(cluster, ns, FULL).get("phase") == "Compressing"
        status = wait_for("phase Failed", lambda: (s := status_of(cluster, ns, FULL)).get("phase") == "Failed" and s,
                          operator)  # fmt: skip
        failed_s = time.monotonic() - started
        compressed = condition(status, "Compressed")
        message = compressed["message"]
        assert compressed["reason"] == "CompressionFailed", compressed
        assert "no space left on the artifacts volume" in message, message
        assert str(volume / FULL / "gen-1") in message, message
        assert f"delete Job {job_name}" in message and "Traceback" not in message, message
        warnings = [e for e in events_for(cluster, ns, FULL) if e["reason"] == "CompressionFailed"]
        assert warnings and warnings[0]["type"] == "Warning" and "no space left" in warnings[0]["message"]

        # Room made; the Job deleted as the condition says: the operator runs it again, and it succeeds.
        subprocess.run(["mount", "-o", "remount,size=64m", str(volume)], check=True)
        freed = time.monotonic()
        old_uid = job["metadata"]["uid"]
        cluster.kubectl("delete", "job", job_name, "-n", ns, "--wait=true")
        again = wait_for(
            "the compression Job created again",
            lambda: (j := get(cluster, "job", ns, job_name)) and j["metadata"]["uid"] != old_uid and j,
            operator,
        )
        proc = run_and_finish(cluster, again, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        done = wait_for("Compressed=True",
                        lambda: condition(s := status_of(cluster, ns, FULL), "Compressed").get("status") == "True" and s,
                        operator)  # fmt: skip
        retry_s = time.monotonic() - freed
        assert condition(done, "Compressed")["reason"] == "ArtifactsReady"
        assert (volume / FULL / "gen-1" / "manifest.json").is_file()
        jobs = [j["metadata"]["name"] for j in kubectl_json(cluster, "get", "jobs", "-n", ns)["items"]]
        assert jobs.count(job_name) == 1, jobs
        print(f"\nfault: artifacts-volume-full failed_s={failed_s:.1f} retry_s={retry_s:.1f} "
              f"attempts={BACKOFF_LIMIT + 1} half_written_files=0 failed_requests=0")  # fmt: skip
    finally:
        cluster.kubectl("delete", "md", FULL, "-n", ns, "--wait=false", check=False)
        if subprocess.run(["umount", str(volume)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(volume)], check=False)


def jobs_of(plant: Plant) -> list[dict[str, Any]]:
    selector = f"frugal.dev/model-deployment={NAME}"
    return list(kubectl_json(plant.cluster, "get", "jobs", "-n", plant.namespace, "-l", selector)["items"])


def test_the_operator_sigkilled_mid_compression_and_mid_rollover(plant: Plant) -> None:
    """Fault: the operator SIGKILLed (no handler runs, nothing is released: an OOM kill, a lost node)
    twice during a new generation's rollout under load — once just after it created the compression
    Job (the Job runs while it is down), once while the new generation's Deployment is up but not yet
    ready (the endpoint still on the old one) — and started again each time.

    What the user sees: the ModelDeployment goes on where it was — Compressing, then phase Deploying
    with Ready=True PreviousGenerationServing while the new generation comes up, then Serving on it. What is lost:
    nothing — one compression Job and one profiling Job for the generation (no duplicates), the old
    generation answers until the new one is ready, no request fails. Time to converge: from the second
    restart to the endpoint on the new generation and the old Deployment deleted (converged_s).
    """
    cluster, operator, kubelet, ns = plant.cluster, plant.operator, plant.kubelet, plant.namespace
    old = f"{NAME}-g1-shard-0"
    with Load(kubelet, RATE_RPS) as load:
        wait_for("requests answered", lambda: len(load.answers) >= 10, operator)
        generation = plant.patch({"serving": {"slo": {"latencyP95Ms": 40}}})
        new = f"{NAME}-g{generation}-shard-0"
        kubelet.hold_ready.add(new)  # its servers start, but are reported ready only after the second kill
        compress = wait_object(cluster, operator, "job", ns, f"{NAME}-g{generation}-compress")
        operator.kill()
        proc = run_and_finish(cluster, compress, plant.work)  # the Job's pod runs on without the operator
        assert proc.returncode == 0, proc.stderr[-3000:]
        operator.start()
        profile = wait_object(cluster, operator, "job", ns, f"{NAME}-g{generation}-profile-local-cpu")
        proc = run_and_finish(cluster, profile, plant.work)
        assert proc.returncode == 0, proc.stderr[-3000:]
        wait_for(
            "the new generation's servers", lambda: plant.synced(lambda: kubelet.running(new) >= 1), operator
        )
        rolling = wait_for(
            "Ready=True PreviousGenerationServing",
            lambda: (
                condition(s := plant.status(), "Ready").get("reason") == "PreviousGenerationServing" and s
            ),
            operator,
        )
        assert condition(rolling, "Ready")["status"] == "True" and rolling["phase"] == "Deploying", rolling
        assert (kubelet.endpoint_selector or {}).get("frugal.dev/generation") == "1"  # mid-rollover
        operator.kill()
        kubelet.hold_ready.clear()
        kubelet.sync()  # the new generation's pods turn ready while no operator runs
        operator.start()
        restarted = time.monotonic()
        wait_for("the endpoint on the new generation",
                 lambda: plant.synced(lambda: (kubelet.endpoint_selector or {}).get("frugal.dev/generation")
                                      == str(generation)), operator)  # fmt: skip
        wait_for("the old generation deleted and retired",
                 lambda: plant.synced(lambda: get(cluster, "deployment", ns, old) is None and kubelet.running(old) == 0),
                 operator)  # fmt: skip
        converged_s = time.monotonic() - restarted
        after = len(load.answers)
        wait_for("requests answered by the new generation", lambda: len(load.answers) >= after + 10, operator)
    settled = wait_for(
        "phase Serving", lambda: (s := plant.status()).get("phase") == "Serving" and s, operator
    )
    print(f"\nfault: operator-sigkill-mid-rollout converged_s={converged_s:.1f} jobs={len(jobs_of(plant))} "
          f"failed_requests={len(failed(load))} requests={len(load.answers)}")  # fmt: skip
    assert not failed(load), failed(load)[:10]
    # One Job of each kind for the generation, the very ones run above (none recreated, so none ran
    # twice); the old generation's were pruned with it.
    jobs = {j["metadata"]["name"]: j["metadata"]["uid"] for j in jobs_of(plant)}
    assert jobs == {compress["metadata"]["name"]: compress["metadata"]["uid"],
                    profile["metadata"]["name"]: profile["metadata"]["uid"]}, jobs  # fmt: skip
    assert (
        settled["observedGeneration"] == generation
        and condition(settled, "Ready")["reason"] == "ServingReady"
    )
    deployments = {
        d["metadata"]["name"] for d in kubectl_json(cluster, "get", "deployments", "-n", ns)["items"]
    }
    assert deployments == {new}, deployments
