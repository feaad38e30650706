"""The CRDs' `x-kubernetes-validations` CEL rules, evaluated locally with cel-python.

The rules are read from the CRD itself: nothing here knows any particular rule. Values are handed
to CEL typed by their schema (a `type: number` field is a double even when written as `1`), as the
API server does. Transition rules (those using `oldSelf`) only run on updates, so they are skipped.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import celpy
from celpy import celtypes

from .field_errors import FieldError, join_path
from .structural import PRESERVE, Node, Path, Schema, child_schema, walk

RULES = "x-kubernetes-validations"
_FIELD_PATH_PART = re.compile(r"\.([A-Za-z_$][A-Za-z0-9_$-]*)|\['([^']*)'\]|\[(\d+)\]")


def _split(text: Any, separator: Any) -> Any:
    """Kubernetes' CEL strings library `<string>.split(<string>)` (cel-python has no such function)."""
    if not isinstance(text, celtypes.StringType) or not isinstance(separator, celtypes.StringType):
        return celpy.CELEvalError("no such overload: split", TypeError, (text, separator))
    if not separator:
        return celtypes.ListType([celtypes.StringType(character) for character in text])
    return celtypes.ListType([celtypes.StringType(part) for part in text.split(separator)])


# Functions of the API server's CEL libraries that the CRDs' rules use and cel-python lacks.
KUBERNETES_FUNCTIONS = {"split": _split}


@functools.cache
def _program(expression: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression), functions=KUBERNETES_FUNCTIONS)


def to_cel(value: Any, schema: Schema) -> Any:
    """`value` as the CEL value the API server would bind, typed by `schema`."""
    if value is None:
        return None
    if schema.get(PRESERVE) or schema.get("x-kubernetes-int-or-string"):
        return celpy.json_to_cel(value)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        return celtypes.MapType(
            {
                celtypes.StringType(key): to_cel(item, child_schema(schema, key) or {PRESERVE: True})
                for key, item in value.items()
            }
        )
    if kind == "array" and isinstance(value, list):
        items = schema.get("items") or {PRESERVE: True}
        return celtypes.ListType([to_cel(item, items) for item in value])
    scalars = {
        "integer": celtypes.IntType,
        "number": celtypes.DoubleType,
        "string": celtypes.StringType,
        "boolean": celtypes.BoolType,
    }
    return scalars[kind](value) if kind in scalars else celpy.json_to_cel(value)


def parse_field_path(field_path: str) -> Path:
    """`.data.calibration` -> ("data", "calibration"); `.labels['a.b']` -> ("labels", "a.b")."""
    parts: list[str | int] = []
    for match in _FIELD_PATH_PART.finditer(field_path):
        name, key, index = match.groups()
        parts.append(int(index) if index is not None else (name if name is not None else key))
    return tuple(parts)


def evaluate(expression: str, self_value: Any) -> Any:
    """Evaluate one CEL expression with `self` bound; raises celpy.CELEvalError on failure."""
    result = _program(expression).evaluate({"self": self_value})
    if isinstance(result, Exception):
        raise result
    return result


def rule_errors(node: Node) -> list[FieldError]:
    """Errors of the rules declared on `node`'s schema, evaluated against its value."""
    errors: list[FieldError] = []
    rules = [rule for rule in node.schema.get(RULES, []) if "oldSelf" not in rule["rule"]]
    if not rules:
        return errors
    self_value = to_cel(node.value, node.schema)
    for rule in rules:
        path = (*node.path, *parse_field_path(rule.get("fieldPath", "")))
        try:
            passed = bool(evaluate(rule["rule"], self_value))
        except celpy.CELEvalError as failure:
            errors.append(
                FieldError(join_path(path), f"Invalid value: rule {rule['rule']!r} failed: {failure.args[0]}")
            )
            continue
        if not passed:
            errors.append(FieldError(join_path(path), f"Invalid value: {_message(rule, self_value)}"))
    return errors


def _message(rule: dict[str, Any], self_value: Any) -> str:
    if "messageExpression" in rule:
        try:
            return str(evaluate(rule["messageExpression"], self_value))
        except celpy.CELEvalError:
            pass
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


def validate(document: Any, schema: Schema) -> list[FieldError]:
    """Every CEL rule of `schema`, at every node of `document` where one is declared."""
    return [error for node in walk(document, schema) for error in rule_errors(node)]
