"""Artifacts in an object store, made local: ``manifest.json`` and the files of the variants wanted.

Serving, profiling and batch load ONNX files from this machine's disk and verify them there
(:func:`frugal.serving.server.artifacts.check_variant`), so an ``s3://`` artifact is first copied into
a local directory: ``manifest.json`` (always fetched again: it names what the rest must be), then each
file of the wanted variants. A local copy whose size and sha256 already match the manifest is kept
(a restart fetches nothing, and the verify cache then applies to it); any other file is downloaded
through a temporary name (:func:`frugal.storage.object_store.download`). What is downloaded is
verified afterwards by the caller exactly as a local artifact is, so a corrupted object refuses to
serve with the same sha256 message.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from frugal.schema.artifact_format import MANIFEST, sha256_file
from frugal.storage import object_store
from frugal.storage.object_store import Location

from .artifacts import ArtifactError, Manifest, VerifyCache, load_manifest, still_as_recorded, variant_files


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch_artifacts` did: the local directory, and how much it moved and kept."""

    directory: Path
    manifest: Manifest
    downloaded: tuple[str, ...]
    kept: tuple[str, ...]
    bytes_fetched: int
    seconds: float

    def summary(self, uri: str) -> str:
        return (
            f"fetched {len(self.downloaded)} file(s), {self.bytes_fetched} bytes from {uri} into "
            f"{self.directory} in {self.seconds:.2f} s; {len(self.kept)} already there"
        )


def default_fetch_dir(uri: str) -> Path:
    """Where `uri`'s files go without ``--fetch-dir``: under the temporary directory, one folder per URI
    (sharded stages and replicas on one machine share it)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / "frugal-artifacts" / digest


def wanted_files(manifest: Manifest, variants: Iterable[str] | None) -> list[str]:
    """Every file of the named variants (all of the manifest's when None), each once, in order. A name
    the manifest does not list is left out: the caller reports it as it does for a local directory."""
    listed = {v.name: v for v in manifest.variants}
    chosen = list(listed) if variants is None else [name for name in variants if name in listed]
    files: list[str] = []
    for name in chosen:
        for relative in variant_files(manifest, listed[name]):
            if relative not in files:
                files.append(relative)
    return files


def up_to_date(local: Path, size_bytes: int, sha256: str, vouched: Mapping[str, str] | None = None) -> bool:
    """Whether the local copy already holds exactly the manifest's file: hashed, unless the verify
    cache vouches for it (`vouched`: path -> sha256 of the files whose stat tuple it recorded)."""
    try:
        if not local.is_file() or local.stat().st_size != size_bytes:
            return False
        if vouched is not None and vouched.get(str(local.resolve())) == sha256:
            return True
        return sha256_file(local) == sha256
    except OSError:
        return False


def vouched_files(cache_dir: Path | None) -> dict[str, str]:
    """The files the verify cache in `cache_dir` trusts now (their stat tuple unchanged), by path."""
    if cache_dir is None:
        return {}
    return {path: e.sha256 for path, e in VerifyCache(cache_dir).read().items() if still_as_recorded(e)}


def fetch_artifacts(
    source: Location,
    target: Path,
    variants: Iterable[str] | None = None,
    verify_cache_dir: Path | None = None,
    only: Sequence[str] | None = None,
) -> Fetched:
    """Copy `source`'s manifest.json and the files of `variants` (every variant when None) into
    `target`, keeping a copy already there that matches the manifest (trusted without hashing when the
    verify cache in `verify_cache_dir` vouches for it, as the server then does). Raises
    FileNotFoundError naming ``manifest.json`` when there is none, ObjectStoreError for a refusal,
    ArtifactError for a manifest it cannot use or a variant it does not list. `only`: exactly these of
    the manifest's files instead (a stage server fetches its stage's file, not the whole variant)."""
    started = time.perf_counter()
    manifest = fetch_manifest(source, target)
    files = wanted_files(manifest, variants) if only is None else [f for f in only if f in manifest.files]
    vouched = vouched_files(verify_cache_dir)
    kept = [
        f
        for f in files
        if up_to_date(target / f, manifest.files[f].size_bytes, manifest.files[f].sha256, vouched)
    ]
    missing = [f for f in files if f not in kept]
    try:
        written = object_store.download(source, missing, target)
    except ValueError as exc:  # a name in the manifest that climbs out of the artifact
        raise ArtifactError(f"{MANIFEST}: {exc}") from None
    size = sum(path.stat().st_size for path in written)
    return Fetched(target, manifest, tuple(missing), tuple(kept), size, time.perf_counter() - started)


def fetch_manifest(source: Location, target: Path) -> Manifest:
    """Copy `source`'s manifest.json into `target` (always: it names what the rest must be) and read it."""
    target.mkdir(parents=True, exist_ok=True)
    object_store.download(source, [MANIFEST], target)
    return load_manifest(target)


def describe_missing(uri: str, error: FileNotFoundError) -> ArtifactError:
    """A missing manifest or file at `uri` as the ArtifactError serving and profiling print."""
    return ArtifactError(
        f"{uri}: {MANIFEST} or a file it lists is missing ({type(error).__name__}: {error}); "
        "--artifacts must name what `frugal compress` published"
    )
