"""Kubernetes Events about a ModelDeployment (pure builder; the reconciler posts them)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

COMPONENT = "frugal-operator"
MESSAGE_MAX = 1024


def desired_event(
    body: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime | None = None
) -> dict[str, Any]:
    meta = body["metadata"]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", "frugal.dev/v1alpha1"),
            "kind": body.get("kind", "ModelDeployment"),
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
            "uid": meta.get("uid", ""),
        },
        "type": kind,
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
