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

from controlplane_harness import ControlPlane
from operator_harness import chart_operator, delete_namespaces, digits_published, get, wait_for, wait_object

ROOT = "/var/lib/frugal/model-cache"


def test_serving_a_model_makes_its_namespace_a_bound_claim_on_its_own_cache_directory(
    crds_installed: ControlPlane, tmp_path: Path
) -> None:
    cluster = crds_installed
    with chart_operator(cluster, tmp_path, values=("--set", "modelCache.enabled=true"),
                        extra_args=["--node-cache-root", ROOT]) as operator:  # fmt: skip
        ns = digits_published(cluster, operator, "node-cache", tmp_path / "pods")
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
        delete_namespaces(cluster, ns)  # while the operator runs: later modules' operators serve every namespace
