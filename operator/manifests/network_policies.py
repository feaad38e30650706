"""NetworkPolicies for a ModelDeployment's pods (pure: spec in, manifest dicts out), when the operator
runs with ``--network-policies``.

* ``<md>-serving`` selects its serving pods and its front: ingress from any pod of the namespace (the
  model's clients, the front, a stage calling the next) and from the monitoring namespace (Prometheus
  scrapes ``/metrics``). A client in another namespace needs a policy of its own that admits it;
  NetworkPolicies add up.
* ``<md>-jobs`` selects its compression and profiling pods, of every generation: no ingress.
* ``<md>-rendezvous`` opens the distillation rendezvous port of the current generation's compression
  pods to those same pods only: the workers of one Indexed Job (one compression Job per generation, so
  the generation label the Job's pod template carries names the Job). NetworkPolicies add up, so an
  older generation's compression pods keep ``<md>-jobs`` alone: nothing reaches them, not even the
  new workers; a superseded Job that still runs loses its rendezvous, which it no longer needs.
Egress stays open: the pods read their inputs and the API server's address differs per cluster.
"""

from __future__ import annotations

from typing import Any

from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.manifests import container_commands, names

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def desired_network_policies(md: ModelDeploymentSpec, metrics_namespace: str) -> list[dict[str, Any]]:
    owner = md.owner
    serving = _policy(
        md,
        names.bounded(owner.name, "serving"),
        "serving",
        _roles(md, "serving", "front"),
        [
            {
                "from": [
                    {"podSelector": {}},
                    {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: metrics_namespace}}},
                ]
            }
        ],
    )
    jobs = _policy(md, names.bounded(owner.name, "jobs"), "compression", _roles(md, "compression", "profiling"), [])
    workers = {"matchLabels": compression_workers(md)}
    rendezvous = {"protocol": "TCP", "port": container_commands.DISTRIBUTED_PORT}
    distillation = _policy(
        md,
        names.bounded(owner.name, "rendezvous"),
        "compression",
        workers,
        [{"from": [{"podSelector": workers}], "ports": [rendezvous]}],
    )
    return [serving, jobs, distillation]


def compression_workers(md: ModelDeploymentSpec) -> dict[str, str]:
    """The labels of the current generation's compression Job's pods, and of no other pod."""
    return {
        names.LABEL_MD: md.owner.name,
        names.LABEL_ROLE: "compression",
        names.LABEL_GENERATION: str(md.owner.generation),
    }


def _roles(md: ModelDeploymentSpec, *roles: str) -> dict[str, Any]:
    return {
        "matchLabels": {names.LABEL_MD: md.owner.name},
        "matchExpressions": [{"key": names.LABEL_ROLE, "operator": "In", "values": list(roles)}],
    }


def _policy(
    md: ModelDeploymentSpec, name: str, component: str, selector: dict[str, Any], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.metadata(md.owner, name, component),
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress},
    }
