"""Validation errors: one `FieldError` per problem, named by the path the API server prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one field.

    `path` is written the way kube-apiserver writes it (`spec.autoscaling.minReplicas`,
    `spec.serving.hardwareProfiles[1]`); `message` says what is wrong and what to change.
    """

    path: str
    message: str

    def render(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(parts: Iterable[str | int]) -> str:
    """`("spec", "tolerations", 0, "key")` -> `spec.tolerations[0].key`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class DocumentErrors:
    """Every error of one YAML document, with where the document came from."""

    source: str
    index: int
    title: str
    errors: tuple[FieldError, ...]

    def render(self) -> str:
        lines = [f"{self.source}, document {self.index + 1} ({self.title}):"]
        lines += [f"  - {error.render()}" for error in self.errors]
        return "\n".join(lines)


class ValidationFailed(ValueError):
    """Raised when resources do not validate; carries every error of every document."""

    def __init__(self, documents: Sequence[DocumentErrors]) -> None:
        self.documents = tuple(documents)
        super().__init__(render_documents(self.documents))

    @property
    def errors(self) -> tuple[FieldError, ...]:
        return tuple(error for document in self.documents for error in document.errors)


def render_documents(documents: Sequence[DocumentErrors]) -> str:
    count = sum(len(document.errors) for document in documents)
    header = f"{count} invalid field{'s' if count != 1 else ''}; change these and try again:"
    return "\n".join([header, *(document.render() for document in documents)])
