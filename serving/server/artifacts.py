"""Read an artifact directory's `manifest.json` and verify a variant's files before anything loads them.

The contract (written by `frugal.compression`, read here with serving's own types): `manifest.json`
lists every file with its sha256 and size, and every variant with its ONNX file and tensor signature.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST = "manifest.json"
SUPPORTED_SCHEMA_VERSIONS = (1,)


class ArtifactError(Exception):
    """The artifact directory cannot be served; the message says what is wrong and where."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class TensorSpec(_Model):
    name: str
    datatype: str
    shape: tuple[int, ...]


class FileEntry(_Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, alias="sizeBytes", ge=0)


class Variant(_Model):
    name: str
    file: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    size_bytes: int | None = Field(default=None, alias="sizeBytes", ge=0)
    steps: tuple[str, ...] = ()


class Manifest(_Model):
    schema_version: int = Field(alias="schemaVersion")
    model: str
    generation: int = 1
    source: str | None = None
    files: dict[str, FileEntry]
    variants: tuple[Variant, ...]

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(v.name for v in self.variants) or "none"
        raise ArtifactError(f"variant {name!r} is not in the manifest (variants: {known})")


def parse_manifest(text: str | bytes, where: str = MANIFEST) -> Manifest:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ArtifactError(f"{where} is not valid JSON: {exc}") from None
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}" for error in exc.errors()
        )
        raise ArtifactError(f"{where} is invalid: {problems}") from None
    if manifest.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ArtifactError(
            f"{where}: schemaVersion {manifest.schema_version} is not supported "
            f"(this server reads {SUPPORTED_SCHEMA_VERSIONS})"
        )
    return manifest


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror}") from None
    return parse_manifest(text, str(path))


def variant_files(manifest: Manifest, variant: Variant) -> list[str]:
    """The variant's ONNX file plus every listed file beside it (external data)."""
    folder = PurePosixPath(variant.file).parent
    if variant.file not in manifest.files:
        raise ArtifactError(f"variant {variant.name!r}: its file {variant.file} is not listed under 'files'")
    beside = [f for f in manifest.files if f != variant.file and PurePosixPath(f).parent == folder]
    return [variant.file, *sorted(beside)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_variant(directory: Path, manifest: Manifest, variant: Variant) -> Path:
    """Check every file of the variant against the manifest; returns the ONNX file's path."""
    root = directory.resolve()
    for relative in variant_files(manifest, variant):
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise ArtifactError(f"manifest file {relative!r} points outside the artifact directory")
        if not path.is_file():
            raise ArtifactError(f"variant {variant.name!r}: {path} is missing")
        expected = manifest.files[relative].sha256
        actual = sha256_of(path)
        if actual != expected:
            raise ArtifactError(
                f"variant {variant.name!r}: sha256 of {relative} is {actual}, but the manifest says "
                f"{expected}; the file was modified or corrupted — re-run compression or fix the manifest"
            )
    return root / variant.file
