"""What kube-apiserver does to a custom resource before validating it, on a structural schema.

Pruning drops fields the schema does not declare (and reports them, as `--validate=strict` does);
defaulting fills in the schema's `default`s; list-type checks reject duplicates in
`x-kubernetes-list-type: set|map` lists. All functions are pure: they return new values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .field_errors import FieldError, join_path

Schema = dict[str, Any]
Path = tuple[str | int, ...]
PRESERVE = "x-kubernetes-preserve-unknown-fields"
ROOT_FIELDS_KEPT = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True)
class Node:
    """One value in a document, with the schema that governs it and where it is."""

    value: Any
    schema: Schema
    path: Path


def child_schema(schema: Schema, key: str | int) -> Schema | None:
    """The schema of `key` inside a value governed by `schema`, or None when undeclared."""
    if isinstance(key, int):
        items = schema.get("items")
        return items if isinstance(items, dict) else None
    properties = schema.get("properties", {})
    if key in properties:
        found: Schema = properties[key]
        return found
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def walk(value: Any, schema: Schema, path: Path = ()) -> Iterator[Node]:
    """Every node of `value` that the schema declares, parents before children."""
    yield Node(value, schema, path)
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        sub = child_schema(schema, key)
        if sub is not None and child is not None:
            yield from walk(child, sub, (*path, key))


def prune(value: Any, schema: Schema, path: Path = ()) -> tuple[Any, list[FieldError]]:
    """Drop undeclared fields (and nulls in non-nullable fields); report the undeclared ones."""
    if isinstance(value, list):
        pruned_items, errors = [], []
        for index, item in enumerate(value):
            sub = child_schema(schema, index)
            kept, item_errors = prune(item, sub, (*path, index)) if sub else (item, [])
            pruned_items.append(kept)
            errors += item_errors
        return pruned_items, errors
    if not isinstance(value, dict):
        return value, []
    return _prune_object(value, schema, path)


def _prune_object(
    value: dict[str, Any], schema: Schema, path: Path
) -> tuple[dict[str, Any], list[FieldError]]:
    result: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, child in value.items():
        if not path and key in ROOT_FIELDS_KEPT:
            result[key] = child
            continue
        sub = child_schema(schema, key)
        if sub is None:
            if schema.get(PRESERVE):
                result[key] = child
            else:
                errors.append(unknown_field(schema, (*path, key)))
            continue
        if child is None and not sub.get("nullable"):
            continue
        result[key], child_errors = prune(child, sub, (*path, key))
        errors += child_errors
    return result, errors


def unknown_field(schema: Schema, path: Path) -> FieldError:
    known = ", ".join(sorted(schema.get("properties", {})))
    hint = f"known fields here: {known}" if known else "this object takes no fields"
    return FieldError(
        join_path(path), f'unknown field "{join_path(path)}": remove it or fix its spelling ({hint})'
    )


def apply_defaults(value: Any, schema: Schema) -> Any:
    """A copy of `value` with the schema's defaults filled in, the way the API server does it."""
    result = copy.deepcopy(value)
    _default_in_place(result, schema)
    return result


def _default_in_place(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if "default" in sub and (key not in value or (value[key] is None and not sub.get("nullable"))):
                value[key] = copy.deepcopy(sub["default"])
        for key, child in value.items():
            sub = child_schema(schema, key)
            if sub is not None:
                _default_in_place(child, sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _default_in_place(item, items)


def list_type_errors(document: Any, schema: Schema) -> list[FieldError]:
    """Duplicates in `x-kubernetes-list-type: set` items or `map` keys, as the server reports them."""
    errors: list[FieldError] = []
    for node in walk(document, schema):
        list_type = node.schema.get("x-kubernetes-list-type")
        if isinstance(node.value, list) and list_type in ("set", "map"):
            keys = node.schema.get("x-kubernetes-list-map-keys", [])
            errors += _duplicates(node.value, node.path, keys if list_type == "map" else [])
    return errors


def _duplicates(items: list[Any], path: Path, map_keys: list[str]) -> list[FieldError]:
    seen: list[Any] = []
    errors = []
    for index, item in enumerate(items):
        identity = [item.get(key) for key in map_keys] if map_keys and isinstance(item, dict) else item
        if identity in seen:
            shown = identity if not map_keys else dict(zip(map_keys, identity, strict=True))
            errors.append(
                FieldError(
                    join_path((*path, index)),
                    f"Duplicate value: {json.dumps(shown)}: remove the repeated entry",
                )
            )
        seen.append(identity)
    return errors
