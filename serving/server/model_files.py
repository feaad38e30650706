"""Which ONNX file a server loads: its variant from `--artifacts` (a directory, or a bucket fetched into
`--fetch-dir`), checked against the manifest, or from the node's model cache.

With ``--node-cache`` the server looks the variant up by its content (:mod:`frugal.storage.node_cache`)
before fetching or hashing anything: found, it loads the node agent's verified copy as it is (only
the agent writes there), and only the small ``manifest.json`` was read. Not found, it fetches and
verifies as without a cache, then offers the verified files to the cache in the background, so the
next replica on this node, or the next wake from zero, finds them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from frugal.serving.server import artifacts
from frugal.serving.server.artifacts import ArtifactError, Manifest, Variant
from frugal.serving.server.settings import ServeConfig, StartupError
from frugal.storage import object_store
from frugal.storage.node_cache import CachedFile, NodeCache
from frugal.storage.object_store import ObjectStoreError

log = logging.getLogger("frugal.serving")


@dataclass(frozen=True)
class VariantFiles:
    """The ONNX file to load, its manifest and variant, what this server serves of it (the variant, or
    one stage's file: :func:`artifacts.served_variant`), and where it came from (for the log)."""

    path: Path
    manifest: Manifest
    variant: Variant
    served: Variant
    origin: str  # "node cache", "bucket" or "directory"


def resolve(config: ServeConfig) -> VariantFiles:
    """The variant's ONNX file, verified. Artifacts it cannot serve (no manifest, a variant the manifest
    does not list, a file that is missing, changed or not ONNX) raise `StartupError` naming the flag."""
    started = time.perf_counter()
    remote = object_store.is_remote(config.artifacts)
    if remote:
        directory = _fetch_dir(config)
    else:
        assert isinstance(config.artifacts, Path)
        directory = config.artifacts
    manifest = _manifest(config, directory, remote)
    try:
        variant = manifest.variant(config.variant)
    except ArtifactError as exc:
        raise StartupError(str(exc), "--variant") from None
    try:
        served = artifacts.served_variant(variant, config.shard_index, config.shard_count)
    except ArtifactError as exc:
        raise StartupError(str(exc), "--shard-count") from None
    cache = NodeCache.at(config.node_cache) if config.node_cache is not None else None
    files = cache_files(manifest, served)
    found = cache.lookup(files) if cache is not None else None
    if cache is not None and found is not None:
        cache.mark_used(files)
        size = sum(f.size for f in files)
        log.info("variant %r: %d file(s), %d bytes from the node cache at %s in %.1f ms, nothing fetched or "
                 "hashed", variant.name, len(files), size, found, (time.perf_counter() - started) * 1000)  # fmt: skip
        return VariantFiles(found / served.file, manifest, variant, served, "node cache")
    if remote:
        _fetch(config, directory, artifacts.variant_files(manifest, served))
    try:
        path = artifacts.verify_variant(directory, manifest, served, config.verify_cache_dir)
    except ArtifactError as exc:
        raise StartupError(str(exc), "--artifacts") from None
    if cache is not None:
        offer = threading.Thread(
            target=_offer, args=(cache, files, directory), name="node-cache-offer", daemon=True
        )
        offer.start()
    return VariantFiles(path, manifest, variant, served, "bucket" if remote else "directory")


OFFER_RETRIES_S = (0.5, 1.0, 2.0, 4.0)  # a node's first pod may start before the agent has opened the inbox up


def _offer(cache: NodeCache, files: list[CachedFile], directory: Path) -> None:
    """Offer the verified files, again a few times if the inbox refuses (best effort)."""
    for wait in (*OFFER_RETRIES_S, None):
        if cache.offer(files, directory) or wait is None:
            return
        time.sleep(wait)


def cache_files(manifest: Manifest, variant: Variant) -> list[CachedFile]:
    """The variant's files as the node cache keys them: names, sizes and sha256s from the manifest."""
    return [
        CachedFile(relative, manifest.files[relative].sha256, manifest.files[relative].size_bytes)
        for relative in artifacts.variant_files(manifest, variant)
    ]


def _fetch_dir(config: ServeConfig) -> Path:
    from frugal.serving.server.fetch import default_fetch_dir

    return config.fetch_dir or default_fetch_dir(str(config.artifacts))


def _manifest(config: ServeConfig, directory: Path, remote: bool) -> Manifest:
    """The manifest: read from the directory, or fetched first from the bucket (always: it names what
    the rest must be)."""
    if not remote:
        try:
            return artifacts.load_manifest(directory)
        except ArtifactError as exc:
            raise StartupError(
                str(exc), "--artifacts", "pass --artifacts a directory `frugal compress` wrote"
            ) from None
    from frugal.serving.server.fetch import fetch_manifest

    with _store_errors(config, directory):
        manifest = fetch_manifest(config.artifacts, directory)
    return manifest


def _fetch(config: ServeConfig, directory: Path, files: list[str]) -> None:
    """The served files from the bucket into `directory` (kept where they already match; logged)."""
    from frugal.serving.server.fetch import fetch_artifacts

    with _store_errors(config, directory):
        fetched = fetch_artifacts(
            config.artifacts, directory, [config.variant], config.verify_cache_dir, only=files
        )
        log.info("%s", fetched.summary(str(config.artifacts)))


@contextlib.contextmanager
def _store_errors(config: ServeConfig, directory: Path) -> Iterator[None]:
    """Turn a bucket's refusals into StartupErrors naming the flag; an unreachable store stays a crash
    (exit 1: a run that failed, not a setting to change)."""
    from frugal.serving.server.fetch import describe_missing

    uri = str(config.artifacts)
    try:
        yield
    except FileNotFoundError as exc:
        raise StartupError(str(describe_missing(uri, exc)), "--artifacts") from None
    except ObjectStoreError as exc:
        if not exc.refused:
            raise
        remedy = "fix the keys or the bucket's policy, or pass another --artifacts"
        raise StartupError(str(exc), "--artifacts", remedy) from None
    except ArtifactError as exc:
        raise StartupError(
            str(exc), "--artifacts", "pass --artifacts a URI `frugal compress` published to"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot write {directory}: {exc.strerror or exc}", "--fetch-dir") from None
