"""NetworkPolicies for a ModelDeployment's pods (pure: spec in, manifest dicts out), when the operator
runs with ``--network-policies``.

* ``<md>-serving`` selects its serving pods and its front: ingress from any pod of the namespace (the
  model's clients, the front, a stage calling the next) and from the monitoring namespace (Prometheus
  scrapes ``/metrics``). A client in another namespace needs a policy of its own that admits it;
  NetworkPolicies add up.
* ``<md>-jobs`` selects its compression and profiling pods: no ingress but the distillation
  rendezvous port, and that only from the same ModelDeployment's compression pods (the workers of one
  Indexed Job). Egress stays open: the pods read their inputs and the API server's address differs per
  cluster.
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
        ("serving", "front"),
        [
            {
                "from": [
                    {"podSelector": {}},
                    {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: metrics_namespace}}},
                ]
            }
        ],
    )
    workers = {"podSelector": {"matchLabels": {names.LABEL_MD: owner.name, names.LABEL_ROLE: "compression"}}}
    rendezvous = {"protocol": "TCP", "port": container_commands.DISTRIBUTED_PORT}
    jobs = _policy(
        md,
        names.bounded(owner.name, "jobs"),
        "compression",
        ("compression", "profiling"),
        [{"from": [workers], "ports": [rendezvous]}],
    )
    return [serving, jobs]


def _policy(
    md: ModelDeploymentSpec, name: str, component: str, roles: tuple[str, ...], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.metadata(md.owner, name, component),
        "spec": {
            "podSelector": {
                "matchLabels": {names.LABEL_MD: md.owner.name},
                "matchExpressions": [{"key": names.LABEL_ROLE, "operator": "In", "values": list(roles)}],
            },
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
