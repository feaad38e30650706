"""Validate one resource document exactly as kube-apiserver would: prune, default, OpenAPI, CEL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import cel, crds, openapi, structural
from .field_errors import FieldError

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CEL_SKIPPED = FieldError(
    "",
    "some validation rules were not checked because the object was invalid; correct the existing errors "
    "to complete validation",
)


@dataclass(frozen=True)
class Checked:
    """A document after defaulting and pruning, with every error found in it."""

    document: dict[str, Any]
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def check(document: Any) -> Checked:
    """Prune unknown fields, apply defaults and validate `document` against its CRD."""
    header = header_errors(document)
    if header:
        return Checked(document if isinstance(document, dict) else {}, tuple(header))
    schema = crds.schema(document["kind"])
    pruned, unknown = structural.prune(document, schema)
    defaulted = structural.apply_defaults(pruned, schema)
    errors = [*unknown, *metadata_errors(defaulted)]
    schema_errors, blocking = openapi.validate(defaulted, defaulted["kind"])
    errors += schema_errors + structural.list_type_errors(defaulted, schema)
    errors += [CEL_SKIPPED] if blocking else cel.validate(defaulted, schema)
    return Checked(defaulted, tuple(errors))


def header_errors(document: Any) -> list[FieldError]:
    """apiVersion and kind must name one of frugal's kinds."""
    if not isinstance(document, dict):
        return [FieldError("", "a resource must be a YAML mapping with apiVersion, kind, metadata and spec")]
    errors = []
    if document.get("apiVersion") != crds.API_VERSION:
        errors.append(
            FieldError(
                "apiVersion", f"Unsupported value: {document.get('apiVersion')!r}: set {crds.API_VERSION}"
            )
        )
    if document.get("kind") not in crds.kinds():
        supported = ", ".join(crds.kinds())
        errors.append(
            FieldError("kind", f"Unsupported value: {document.get('kind')!r}: supported kinds: {supported}")
        )
    return errors


def metadata_errors(document: dict[str, Any]) -> list[FieldError]:
    """The checks the API server makes on a custom resource's name."""
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return [FieldError("metadata.name", "Required value: name or generateName is required")]
    name = metadata.get("name")
    if not name:
        return [FieldError("metadata.name", "Required value: name or generateName is required")]
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        return [
            FieldError(
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist "
                "of lower case alphanumeric characters, '-' or '.', and must start and "
                "end with an alphanumeric character",
            )
        ]
    return []
