"""The node model cache's claim per namespace, against the real API server and the real volume binder.

With the chart's modelCache enabled (its RBAC grants persistent volumes and claims, nothing more) and
the operator told the cache's root, serving a model makes the namespace's hostPath volume and claim;
the persistent-volume controller binds them to each other only, and the serving pods mount the claim's
two pieces. The pods themselves are played here as in the rest of this tier; the agent and the
servers sharing the cache run for real in the component tier (test_node_model_cache.py) and on the
real node (e2e).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    chart_identity,
    create_namespace,
    get,
    run_and_finish,
    wait_for,
    wait_object,
)

ROOT = "/var/lib/frugal/model-cache"


def test_serving_a_model_makes_its_namespace_a_bound_claim_on_its_own_cache_directory(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    cluster = crds_installed
    identity = chart_identity(cluster, tmp_path, values=("--set", "modelCache.enabled=true"))
    operator = Operator(cluster, tmp_path / "artifacts", tmp_path / "operator.log", kubeconfig=identity,
                        extra_args=["--node-cache-root", ROOT])  # fmt: skip
    operator.start()
    try:
        ns = create_namespace(cluster, "node-cache")
        work = tmp_path / "pods"
        work.mkdir()
        cluster.kubectl("apply", "-n", ns, "-f", EXAMPLES_DIR / "digits.yaml")
        for job in ("digits-g1-compress", "digits-g1-profile-local-cpu"):
            proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), work)
            assert proc.returncode == 0, proc.stderr[-3000:]
        deployment = wait_object(cluster, operator, "deployment", ns, "digits-g1-shard-0")

        def bound() -> dict[str, Any] | None:
            claim = get(cluster, "persistentvolumeclaim", ns, "frugal-model-cache") or {}
            return claim if (claim.get("status") or {}).get("phase") == "Bound" else None

        claim = wait_for("the namespace's cache claim to be bound", bound, operator)
        volume = get(cluster, "persistentvolume", ns, f"frugal-model-cache-{ns}") or {}  # cluster-scoped: -n ignored
        assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
        assert volume["spec"]["hostPath"]["path"] == f"{ROOT}/{ns}"
        assert volume["spec"]["claimRef"]["namespace"] == ns and volume["status"]["phase"] == "Bound"
        pod = deployment["spec"]["template"]["spec"]
        assert {"name": "node-cache", "persistentVolumeClaim": {"claimName": "frugal-model-cache"}} in pod["volumes"]
        mounts = {m["subPath"]: m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "node-cache"}
        assert mounts["variants"]["readOnly"] is True and not mounts["inbox"].get("readOnly")
    finally:
        operator.stop()
