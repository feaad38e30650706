"""What this operator last applied, by object and field manager: the memory that lets a settled
ModelDeployment cost no write (an apply whose body has not changed is skipped until the drift time)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from frugal.operator.control.port import AUTOSCALER_FIELD_MANAGER, FIELD_MANAGER
from frugal.operator.manifests import names


class AppliedObjects:
    """What this operator last applied, by object and field manager: an apply whose body is unchanged
    is skipped (a settled ModelDeployment writes nothing) until `drift_seconds` have passed."""

    def __init__(self, drift_seconds: float, clock: Callable[[], float]) -> None:
        self._drift = drift_seconds
        self._clock = clock
        # (manager, apiVersion, kind, namespace, name) -> (digest, when applied, owning ModelDeployment)
        self._seen: dict[tuple[str, str, str, str, str], tuple[bytes, float, str]] = {}
        self._guard = threading.Lock()

    @staticmethod
    def _key(obj: Mapping[str, Any], manager: str) -> tuple[str, str, str, str, str]:
        meta = obj["metadata"]
        return (manager, obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])

    def changed(self, obj: Mapping[str, Any], manager: str) -> bool:
        with self._guard:
            seen = self._seen.get(self._key(obj, manager))
        if seen is None:
            return True
        digest, when, _ = seen
        return digest != _digest(obj) or self._clock() - when >= self._drift

    def known(self, obj: Mapping[str, Any]) -> bool:
        """Whether this operator has applied `obj` (under any field manager) and not forgotten it."""
        meta = obj["metadata"]
        wanted = (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
        with self._guard:
            return any((manager, *wanted) in self._seen for manager in (FIELD_MANAGER, AUTOSCALER_FIELD_MANAGER))

    def remember(self, obj: Mapping[str, Any], manager: str) -> None:
        owner = (obj["metadata"].get("labels") or {}).get(names.LABEL_MD, "")
        with self._guard:
            self._seen[self._key(obj, manager)] = (_digest(obj), self._clock(), owner)

    def forget_object(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with self._guard:
            for key in [k for k in self._seen if k[1:] == (api_version, kind, namespace, name)]:
                del self._seen[key]

    def forget(self, namespace: str, model_deployment: str) -> None:
        """Forget every object of `namespace/model_deployment` (deleted, or about to be)."""
        with self._guard:
            for key in [k for k, v in self._seen.items() if k[3] == namespace and v[2] == model_deployment]:
                del self._seen[key]


def _digest(obj: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).digest()
