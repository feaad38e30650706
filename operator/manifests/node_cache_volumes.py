"""The node's model cache as serving pods reach it (pure): one claim per namespace, bound to a volume of
that namespace's directory on every node, mounted in two pieces.

Why a claim and not a hostPath in the pod: the restricted Pod Security Standard, which a model's
namespace should enforce, forbids hostPath volumes in pods but admits persistentVolumeClaims. So the
operator (the chart's ``--node-cache-root``) makes a hostPath PersistentVolume per namespace,
``<root>/<namespace>`` on whichever node a pod runs, bound to the claim :data:`CLAIM` in that
namespace by name (``claimRef`` and ``volumeName``, and a storage class no provisioner serves, so
nothing else binds it). A pod can then reach its own namespace's cache and no other: a tenant never
reads another's models. Serving pods mount ``variants/`` read-only and ``inbox/`` writable
(:mod:`frugal.storage.node_cache`); the node agent (the chart's DaemonSet, ``frugal model-cache
--namespaces``) is the only writer of ``variants/``.

The volume and claim are shared by every ModelDeployment of the namespace, so they carry no owner and
outlive each of them; the cache they hold is bounded by the agent's budget, not by the claim's size.
"""

from __future__ import annotations

import posixpath
from typing import Any

from frugal.operator.manifests import names

CLAIM = "frugal-model-cache"
STORAGE_CLASS = "frugal-model-cache"  # served by no provisioner: only the operator's volumes bind
NOMINAL_SIZE = "1Gi"  # a hostPath volume has no size: a claim must still name one, and the volume match it
VOLUME_NAME = "node-cache"  # in the pod
MOUNT_PATH = "/var/cache/frugal/node"
ENV = "FRUGAL_NODE_CACHE"  # `frugal serve --node-cache`


def volume_name(namespace: str) -> str:
    """The PersistentVolume (cluster-scoped) of `namespace`'s cache."""
    return f"{CLAIM}-{namespace}"


def _labels() -> dict[str, str]:
    return {
        names.LABEL_NAME: CLAIM,
        names.LABEL_PART_OF: names.PART_OF,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
    }


def desired_volume(namespace: str, root: str) -> dict[str, Any]:
    """The hostPath volume of `namespace`'s directory under `root`, reserved for its claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(namespace), "labels": _labels()},
        "spec": {
            "capacity": {"storage": NOMINAL_SIZE},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": CLAIM},
            "hostPath": {"path": posixpath.join(root, namespace), "type": "DirectoryOrCreate"},
        },
    }


def desired_claim(namespace: str) -> dict[str, Any]:
    """The claim serving pods of `namespace` mount, bound to its volume by name."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace, "labels": _labels()},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": STORAGE_CLASS,
            "volumeName": volume_name(namespace),
            "resources": {"requests": {"storage": NOMINAL_SIZE}},
        },
    }


def desired(namespace: str, root: str) -> list[dict[str, Any]]:
    """The volume, then its claim."""
    return [desired_volume(namespace, root), desired_claim(namespace)]


def pod_volume() -> dict[str, Any]:
    return {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": CLAIM}}


def mounts() -> list[dict[str, Any]]:
    """``variants/`` read-only and ``inbox/`` writable, under :data:`MOUNT_PATH` as the cache's root."""
    return [
        {"name": VOLUME_NAME, "mountPath": f"{MOUNT_PATH}/variants", "subPath": "variants", "readOnly": True},
        {"name": VOLUME_NAME, "mountPath": f"{MOUNT_PATH}/inbox", "subPath": "inbox"},
    ]
