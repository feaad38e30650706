"""OpenAPI (structural schema) validation of a custom resource, with the API server's field paths.

The CRD's openAPIV3Schema is nearly JSON Schema draft 4; only `nullable` needs translating. Each
jsonschema error becomes a `FieldError` whose path and wording follow kube-apiserver's, plus the
field's own description so the message says what the field wants.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema

from . import crds
from .field_errors import FieldError, join_path

Schema = dict[str, Any]
# Errors after which the API server does not run CEL rules (their inputs are not well-typed).
BLOCKING = frozenset({"type", "anyOf", "enum", "required", "maxLength", "maxItems", "maxProperties"})
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])")


def to_json_schema(schema: Any) -> Any:
    """The draft-4 JSON Schema equivalent of a Kubernetes structural schema."""
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: to_json_schema(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") and "type" in schema:
        converted["type"] = [schema["type"], "null"]
    return converted


@functools.cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(to_json_schema(crds.schema(kind)))


def validate(document: Any, kind: str) -> tuple[list[FieldError], bool]:
    """Schema errors of `document` (already pruned and defaulted), and whether any blocks CEL."""
    errors: list[FieldError] = []
    blocking = False
    for error in sorted(
        _validator(kind).iter_errors(document), key=lambda e: list(map(str, e.absolute_path))
    ):
        blocking = blocking or error.validator in BLOCKING
        for field_error in _field_errors(error):
            if field_error not in errors:
                errors.append(field_error)
    return errors, blocking


def _field_errors(error: jsonschema.ValidationError) -> list[FieldError]:
    path = tuple(error.absolute_path)
    if error.validator == "required":
        return [
            FieldError(join_path((*path, name)), f"Required value: set {name}")
            for name in error.validator_value
            if isinstance(error.instance, dict) and name not in error.instance
        ]
    about = error.schema.get("description") if isinstance(error.schema, dict) else None
    message = f"Invalid value: {_show(error.instance)}: {_explain(error)}"
    if about:
        message += f" ({_first_sentence(about)})"
    return [FieldError(join_path(path), message)]


def _explain(error: jsonschema.ValidationError) -> str:
    rule, limit, value = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    match rule:
        case "type":
            return f"must be of type {limit}, not {_json_type(value)}" + _quote_hint(limit, value)
        case "anyOf":
            # Only int-or-string fields use anyOf; the field's description (added below) says which strings.
            return "must be an integer or a string"
        case "enum":
            return "Unsupported value; supported values: " + ", ".join(json.dumps(v) for v in limit)
        case "minimum":
            return f"must be greater than {'' if schema.get('exclusiveMinimum') else 'or equal to '}{limit}"
        case "maximum":
            return f"must be less than {'' if schema.get('exclusiveMaximum') else 'or equal to '}{limit}"
        case "minItems" | "maxItems":
            return f"must have {'at least' if rule == 'minItems' else 'at most'} {limit} item(s)"
        case "minLength" | "maxLength":
            return f"must be {'at least' if rule == 'minLength' else 'at most'} {limit} character(s) long"
        case "maxProperties":
            return f"must have at most {limit} entries"
        case "pattern":
            return f"must match the pattern {limit}"
        case _:
            return error.message


def _quote_hint(expected: Any, value: Any) -> str:
    if expected == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return f'; write it in quotes, e.g. "{value}"'
    return ""


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].rstrip(".")
