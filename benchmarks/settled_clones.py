"""Copies of one settled ModelDeployment, written straight to the API server (reconcile_scale --clone).

Bringing thousands of ModelDeployments to Serving one pipeline at a time takes the operator about
half a second each on two cores; what an operator restart meets is only their settled objects. This
writes those: the ModelDeployment with its status, and every child the operator made for the first
one (Deployments, Services, Jobs, PodDisruptionBudgets, NetworkPolicies), each with the first one's
name replaced in every string and its owner reference pointing at the copy, and the statuses the Job
controller and the kubelet would have written. The restarted operator then re-applies what differs
(one pass each) and settles.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.cluster.apply import Cluster
from frugal.operator.control.port import JOB_KINDS, POLICY_KINDS, SERVING_KINDS
from frugal.operator.manifests import names

CHILD_KINDS = tuple(dict.fromkeys((*SERVING_KINDS, *JOB_KINDS, *POLICY_KINDS)))
# What the API server sets or derives, and what a Job's controller adds to it (its selector).
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink")
JOB_CONTROLLER_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")


def templates(api: Cluster, namespace: str, first: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`first`'s body and its children's, as the API server holds them."""
    md = api.get(API_VERSION, "ModelDeployment", namespace, first)
    assert md is not None, f"{namespace}/{first} is gone"
    selector = {names.LABEL_MD: first, names.LABEL_MANAGED_BY: names.MANAGED_BY}
    children = [
        {**obj, "apiVersion": api_version, "kind": kind}  # a list's items do not say their kind
        for api_version, kind in CHILD_KINDS
        for obj in api.find(api_version, kind, namespace, selector)
    ]
    return md, children


def writable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` without its status and what only the API server or a controller may set."""
    copy = json.loads(json.dumps(obj))
    copy.pop("status", None)
    for field in SERVER_FIELDS:
        copy["metadata"].pop(field, None)
    spec = copy.get("spec") or {}
    if copy["kind"] == "Service":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    if copy["kind"] == "Job":
        spec.pop("selector", None)
        labels = spec["template"]["metadata"].get("labels") or {}
        for label in JOB_CONTROLLER_LABELS:
            labels.pop(label, None)
    return copy


def renamed(obj: Mapping[str, Any], first: str, name: str, first_uid: str, uid: str) -> dict[str, Any]:
    text = json.dumps(obj).replace(first, name).replace(first_uid, uid)
    return dict(json.loads(text))


def clone(
    api: Cluster,
    namespace: str,
    first: str,
    count: int,
    statuses: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]],
    threads: int = 8,
) -> int:
    """Write `md-0001` … `md-{count-1}` as settled copies of `first`; `statuses[kind](obj)` is the
    status a controller would write for a child of that kind. Returns the objects written."""
    md, children = templates(api, namespace, first)
    first_uid = md["metadata"]["uid"]
    md_status = md.get("status") or {}
    spec_only = {"apiVersion": md["apiVersion"], "kind": md["kind"], "spec": md["spec"]}
    child_bodies = [(writable(child), child["kind"]) for child in children]

    def one(index: int) -> int:
        name = f"md-{index:04d}"
        created = api.create({**spec_only, "metadata": {"name": name, "namespace": namespace}})
        uid = created["metadata"]["uid"]
        api.patch_status(
            API_VERSION, "ModelDeployment", namespace, name, renamed(md_status, first, name, first_uid, uid)
        )
        written = 1
        for body, kind in child_bodies:
            child = api.create(renamed(body, first, name, first_uid, uid))
            written += 1
            if kind in statuses:
                api.patch_status(
                    child["apiVersion"], kind, namespace, child["metadata"]["name"], statuses[kind](child)
                )
        return written

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, range(1, count)))
