"""An in-memory API store: the control loops' port (:class:`~frugal.operator.control.port.ClusterPort`)
on one machine.

Just enough of the API server's behaviour that the operator's own reconciler and autoscaler run
unchanged against it:

- **server-side apply with field ownership**: each field manager owns the leaf fields it last
  applied; an apply replaces that manager's fields (a field it no longer sends is removed unless
  another manager owns it) and, forced as the operator always applies, takes over any it sends. So
  ``spec.replicas`` of a serving Deployment belongs to the autoscaler, and the operator's applies,
  which never carry it, leave it alone. Lists are atomic (the API server merges some lists by key;
  none of the operator's objects relies on that);
- **the status subresource**: applies and creates ignore ``status``; :meth:`patch_status` is a JSON
  merge patch of it (``None`` removes a field); ``metadata.generation`` counts spec changes;
- **owner references with garbage collection**: deleting an object deletes its dependents (the
  background cascade, at once);
- **label selectors** of equality, ``generateName``, uids and resource versions;
- **watching**: :meth:`wait_for_change` blocks until a write after a given resource version.

Written by hand: no maintained Python library fakes an API server (the kubernetes client ships
none), and a real one is what the control-plane tier runs.
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from frugal.operator.control.port import FIELD_MANAGER, ApiError

Key = tuple[str, str, str, str]  # (apiVersion, kind, namespace or "", name)
Path = tuple[str, ...]
# What a reference to an owner carries: (apiVersion, kind, namespace or "", uid).
_SUFFIX = "abcdefghijklmnopqrstuvwxyz0123456789"


class Store:
    def __init__(self, apis: Iterable[tuple[str, str]] = ()) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._owned: dict[Key, dict[str, set[Path]]] = {}  # object -> field manager -> leaf paths
        self._apis = frozenset(apis)  # (group/version, plural) served beyond the built-in kinds
        self._version = itertools.count(1)
        self.resource_version = 0
        self._changed = threading.Condition()
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str, Mapping[str, Any]], None]] = []

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._objects.get((api_version, kind, namespace or "", name))
            return copy.deepcopy(found) if found is not None else None

    def find(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (version, k, ns, _), obj in sorted(self._objects.items())
                if (version, k) == (api_version, kind)
                and (namespace is None or ns == namespace)
                and _matches(obj, selector)
            ]

    def pages(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> Iterator[list[dict[str, Any]]]:
        yield self.find(api_version, kind, namespace, selector)

    def has_api(self, group_version: str, plural: str) -> bool:
        return (group_version, plural) in self._apis

    # -- writing ---------------------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply, conflicts forced: `field_manager` owns exactly the fields it sent."""
        key = _key(obj)
        sent = {k: v for k, v in obj.items() if k not in ("status", "apiVersion", "kind")}
        leaves = dict(_leaves(sent))
        with self._lock:
            current = self._objects.get(key)
            owned = self._owned.setdefault(key, {})
            if current is None:
                current = self._new(obj)
            merged = copy.deepcopy(current)
            others = set().union(*(paths for manager, paths in owned.items() if manager != field_manager))
            for path in owned.get(field_manager, set()) - set(leaves) - others:
                _remove(merged, path)
            for path, value in leaves.items():
                _set(merged, path, copy.deepcopy(value))
            for manager in owned:
                if manager != field_manager:
                    owned[manager] -= set(leaves)
            owned[field_manager] = set(leaves)
            if merged.get("spec") != current.get("spec") and key in self._objects:
                merged["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            return self._write("MODIFIED" if key in self._objects else "ADDED", key, merged)

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            obj = {**obj, "metadata": {**meta, "name": meta["generateName"] + _random_suffix()}}
        key = _key(obj)
        with self._lock:
            if key in self._objects:
                raise ApiError(409, f'{obj["kind"]} "{key[3]}" already exists')
            created = self._new(obj)
            for field, value in obj.items():
                if field not in ("metadata", "status"):
                    created[field] = copy.deepcopy(value)
            return self._write("ADDED", key, created)

    def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (api_version, kind, namespace or "", name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise ApiError(404, f'{kind} "{name}" not found')
            updated = copy.deepcopy(current)
            updated["status"] = _merge_patch(updated.get("status") or {}, status)
            return self._write("MODIFIED", key, updated)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        with self._lock:
            key = (api_version, kind, namespace or "", name)
            obj = self._objects.pop(key, None)
            if obj is None:
                return False
            self._owned.pop(key, None)
            self._notify("DELETED", obj)
            self._collect(obj["metadata"]["uid"])
            return True

    # -- watching --------------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[str, Mapping[str, Any]], None]) -> None:
        """Call `listener(event type, object)` after every write (ADDED, MODIFIED, DELETED)."""
        with self._lock:
            self._listeners.append(listener)

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the store's resource version passes `since` (or `timeout`); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self.resource_version > since, timeout)
            return self.resource_version

    # -- inside ----------------------------------------------------------------------------------------

    def _new(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {
                "name": meta["name"],
                **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **{k: copy.deepcopy(v) for k, v in meta.items() if k not in ("name", "namespace", "generateName")},
            },
        }

    def _write(self, event: str, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            self.resource_version = next(self._version)
            obj["metadata"]["resourceVersion"] = str(self.resource_version)
            self._objects[key] = obj
            self._changed.notify_all()
        self._notify(event, obj)
        return copy.deepcopy(obj)

    def _notify(self, event: str, obj: Mapping[str, Any]) -> None:
        if event == "DELETED":
            with self._changed:
                self.resource_version = next(self._version)
                self._changed.notify_all()
        for listener in list(self._listeners):
            listener(event, copy.deepcopy(obj))

    def _collect(self, owner_uid: str) -> None:
        """The garbage collector: every object an owner reference ties to `owner_uid` goes too."""
        dependents = [
            key
            for key, obj in self._objects.items()
            if any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]
        for api_version, kind, namespace, name in dependents:
            self.delete(api_version, kind, namespace or None, name)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


def _matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _leaves(value: Mapping[str, Any], prefix: Path = ()) -> Iterable[tuple[Path, Any]]:
    for key, item in value.items():
        if isinstance(item, Mapping) and item:
            yield from _leaves(item, (*prefix, key))
        else:
            yield (*prefix, key), item


def _set(target: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value


def _remove(target: dict[str, Any], path: Path) -> None:
    parents = []
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            return
        parents.append((target, key))
        target = target[key]
    target.pop(path[-1], None)
    for parent, key in reversed(parents):  # an emptied map goes too, as the API server prunes it
        if parent[key]:
            break
        del parent[key]


def _merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: maps merge, None removes, anything else replaces."""
    merged = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            before = merged.get(key)
            merged[key] = _merge_patch(before if isinstance(before, Mapping) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _random_suffix() -> str:
    return "".join(_SUFFIX[b % len(_SUFFIX)] for b in uuid.uuid4().bytes[:5])
