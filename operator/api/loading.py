"""Read ModelDeployment/HardwareProfile YAML, validate it against the CRDs and type it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .field_errors import DocumentErrors, FieldError, ValidationFailed
from .models import MODELS, Resource
from .validation import check

YAML_SUFFIXES = (".yaml", ".yml", ".json")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as Kubernetes' YAML decoding does."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, source: str = "<text>") -> list[Any]:
    """The non-empty documents of a YAML stream; a syntax error becomes a ValidationFailed."""
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as error:
        raise ValidationFailed(
            [DocumentErrors(source, 0, "YAML", (FieldError("", f"not valid YAML: {error}"),))]
        ) from None
    return [document for document in documents if document is not None]


def title(document: Any) -> str:
    if not isinstance(document, dict):
        return "not a mapping"
    name = (
        (document.get("metadata") or {}).get("name") if isinstance(document.get("metadata"), dict) else None
    )
    return f"{document.get('kind', 'no kind')} {name or '<no name>'}"


def parse_resources(documents: Sequence[Any], source: str = "<documents>") -> list[Resource]:
    """Validate and default every document, then type it; raise with every error of every document."""
    checked = [check(document) for document in documents]
    failures = [
        DocumentErrors(source, index, title(document), result.errors)
        for index, (document, result) in enumerate(zip(documents, checked, strict=True))
        if result.errors
    ]
    if failures:
        raise ValidationFailed(failures)
    return [MODELS[result.document["kind"]].model_validate(result.document) for result in checked]


def parse_resource(document: Any) -> Resource:
    """One resource document (a dict as kubectl would send it) validated, defaulted and typed."""
    return parse_resources([document])[0]


def _read(path_or_text: str | Path) -> tuple[str, str]:
    if isinstance(path_or_text, Path) or ("\n" not in path_or_text and path_or_text.endswith(YAML_SUFFIXES)):
        path = Path(path_or_text)
        return path.read_text(encoding="utf-8"), str(path)
    return path_or_text, "<text>"


def load_documents(path_or_text: str | Path) -> list[Resource]:
    """Every resource in a YAML file (a Path or a *.yaml/*.yml/*.json string) or in YAML text.

    Raises ValidationFailed naming the file, the document and each invalid field;
    FileNotFoundError when the file is missing.
    """
    text, source = _read(path_or_text)
    return parse_resources(parse_yaml(text, source), source)
