"""Read an artifact directory's `manifest.json` and verify a variant's files before anything loads them.

The contract is :mod:`frugal.schema.artifact_format` (written by `frugal.compression`, read here
through the same models): `manifest.json` lists every file with its sha256 and size, and every variant
with its ONNX file and tensor signature. A manifest of another version, or one edited by hand into
something the schema does not allow, is refused naming the field. Every file of the variant is checked
against the manifest before ONNX Runtime sees it; a mismatch refuses to serve (:class:`ArtifactError`).

The verify cache (`frugal serve --verify-cache-dir DIR`, off unless set) saves re-hashing unchanged
files on every start. After a file's sha256 has matched the manifest, `DIR/verified-files.json` records
its path, size, mtime_ns, ctime_ns, inode and device with that sha256. A later start trusts a file
without reading it when its current stat tuple equals an entry's and the entry's sha256 is the one the
manifest asks for now (so a new manifest, or a file replaced by a write, copy or rename, is hashed
again). Anything else is hashed as without a cache, and a mismatch refuses exactly as without one.

What this trusts, and why that is acceptable:

* A file replaced in place with identical size, mtime, ctime and inode (and on the same device) is
  missed: it is not re-hashed. That takes silent media corruption (bit rot) between two starts, a
  write to the block device under the filesystem, a filesystem or FUSE/network layer that does not
  update ctime on writes, or someone who sets the system clock back to forge ctime (which needs
  root). An ordinary in-place rewrite — even one that keeps the size and restores the mtime with
  `touch -d` — changes ctime, which userspace cannot set, and is caught. What the manifest check
  guards against is a wrong, partial or changed artifact (a half-finished copy, another generation's
  file, a file edited in place), and every such change goes through the filesystem and moves the
  stat tuple. It was never a defence against someone who can write the artifacts: they can rewrite
  `manifest.json` beside them.
* A file changed within the same timestamp tick as it was hashed would keep its stat tuple (the
  "racily clean" case git knows): a file whose mtime or ctime is less than
  :data:`RACY_WINDOW_S` before the check began is verified but not recorded, so it is hashed again
  next time. File timestamps come from the filesystem's clock (a file server's, for NFS); a server
  clock more than that window behind this one narrows the protection.
* The cache file lives in a directory only the server writes (in a pod, an `emptyDir` of its own,
  while the artifacts are mounted read-only). A forged entry only helps someone who can also change
  the artifact files — who could as well rewrite `manifest.json`.

Writes are atomic (a temporary file in the same directory, then a rename); several servers sharing
one directory merge what they find there, and a lost race only costs one more hash later. An
unreadable or corrupt cache file is ignored (debug log) and an unwritable directory only logs a
warning: the cache can make a start faster, never make it fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frugal.schema import artifact_format
from frugal.schema.artifact_format import ArtifactError, FileEntry, Manifest, TensorSpec, Variant, sha256_file

# The shared models and error, re-exported: serving's modules import them from here.
__all__ = ["ArtifactError", "FileEntry", "Manifest", "TensorSpec", "Variant"]

VERIFY_CACHE_FILE = "verified-files.json"
VERIFY_CACHE_VERSION = 1
VERIFY_CACHE_MAX_ENTRIES = 512  # a few artifact generations' worth; the oldest entries go first
RACY_WINDOW_S = 2.0  # files touched this recently before a check are verified but not recorded

log = logging.getLogger("frugal.serving")


def parse_manifest(text: str | bytes, where: str = artifact_format.MANIFEST) -> Manifest:
    """The manifest in `text` (raises ArtifactError naming `where` and the field that is wrong)."""
    return artifact_format.parse_manifest(text, where)


def load_manifest(directory: Path) -> Manifest:
    """`directory/manifest.json`, read through the shared schema (raises ArtifactError)."""
    return artifact_format.read_manifest(directory)


def variant_files(manifest: Manifest, variant: Variant) -> list[str]:
    """The variant's ONNX file plus every listed file beside it (external data)."""
    folder = PurePosixPath(variant.file).parent
    if variant.file not in manifest.files:
        raise ArtifactError(f"variant {variant.name!r}: its file {variant.file} is not listed under 'files'")
    beside = [f for f in manifest.files if f != variant.file and PurePosixPath(f).parent == folder]
    return [variant.file, *sorted(beside)]


def served_variant(variant: Variant, shard_index: int, shard_count: int) -> Variant:
    """What one server of `variant` loads: the variant itself, or for stage `shard_index` of
    `shard_count` a variant whose file and inputs are that stage's own (its ONNX file, compressed and
    verified once by compression, in a folder of its own); the outputs stay the whole model's, which
    is what the first stage answers its clients. Raises ArtifactError when the manifest has no stage
    files for that count."""
    if shard_count <= 1:
        return variant
    stage_set = variant.stage_set(shard_count)
    if not 0 <= shard_index < shard_count:
        raise ArtifactError(f"shard index {shard_index} is not one of 0..{shard_count - 1}")
    stage = stage_set.stages[shard_index]
    return variant.model_copy(update={"file": stage.file, "inputs": stage.inputs, "stage_sets": ()})


# ------------------------------------------------------------------------------------ verify cache


@dataclass(frozen=True)
class FileStat:
    """What the verify cache compares: a file is trusted only while all of these stay the same."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class _CacheEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @property
    def stat(self) -> FileStat:
        return FileStat(self.size, self.mtime_ns, self.ctime_ns, self.inode, self.device)


class _CacheDocument(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    version: int
    entries: list[_CacheEntry]


class VerifyCache:
    """`DIR/verified-files.json`: which files (by resolved path and stat tuple) matched which sha256."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / VERIFY_CACHE_FILE

    def read(self) -> dict[str, _CacheEntry]:
        """The recorded entries by path; empty (with a debug log) when the file is missing or unusable."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.debug("verify cache %s is unreadable (%s); hashing every file", self.path, exc)
            return {}
        try:
            doc = _CacheDocument.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            log.debug("verify cache %s is corrupt, ignoring it: %s: %s", self.path, where, first["msg"])
            return {}
        if doc.version != VERIFY_CACHE_VERSION:
            log.debug("verify cache %s has version %s, ignoring it", self.path, doc.version)
            return {}
        return {entry.path: entry for entry in doc.entries}

    def record(self, verified: dict[Path, tuple[FileStat, str]]) -> None:
        """Merge `verified` into the file on disk (re-read now: another server may have written it),
        dropping entries whose file is gone or changed, and replace it atomically."""
        if not verified:
            return
        current = self.read()
        for path in verified:
            current.pop(str(path), None)
        kept = [e for e in current.values() if still_as_recorded(e)]
        fresh = [
            _CacheEntry(
                path=str(path),
                size=stat.size,
                mtime_ns=stat.mtime_ns,
                ctime_ns=stat.ctime_ns,
                inode=stat.inode,
                device=stat.device,
                sha256=sha256,
            )
            for path, (stat, sha256) in verified.items()
        ]
        entries = [*kept, *fresh][-VERIFY_CACHE_MAX_ENTRIES:]
        doc = {"version": VERIFY_CACHE_VERSION, "entries": [e.model_dump() for e in entries]}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.path, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            log.warning("cannot write the verify cache %s (%s); the next start hashes again", self.path, exc)


def still_as_recorded(entry: _CacheEntry) -> bool:
    """Whether the entry's file is still there with the recorded stat tuple (else it is dropped)."""
    try:
        return FileStat.of(Path(entry.path)) == entry.stat
    except OSError:
        return False


def _write_atomically(target: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ------------------------------------------------------------------------------------ verification


@dataclass(frozen=True)
class FileCheck:
    relative: str
    size_bytes: int
    from_cache: bool  # trusted from the verify cache without reading it
    hash_seconds: float  # 0 when from the cache


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`check_variant`: the ONNX file to load and how each file was verified."""

    path: Path
    files: tuple[FileCheck, ...]
    seconds: float  # the whole check: stats, cache read and write, hashing
    cache_dir: Path | None

    @property
    def hashed(self) -> int:
        return sum(not f.from_cache for f in self.files)

    @property
    def from_cache(self) -> int:
        return sum(f.from_cache for f in self.files)

    @property
    def hash_seconds(self) -> float:
        return sum(f.hash_seconds for f in self.files)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def summary(self, variant: str) -> str:
        where = f"the verify cache at {self.cache_dir}" if self.cache_dir else "no verify cache"
        return (
            f"verified variant {variant!r}: {len(self.files)} file(s), {self.size_bytes} bytes in "
            f"{self.seconds * 1000:.1f} ms; {self.hashed} hashed in {self.hash_seconds * 1000:.1f} ms, "
            f"{self.from_cache} trusted from {where}"
        )


def check_variant(
    directory: Path,
    manifest: Manifest,
    variant: Variant,
    cache_dir: Path | None = None,
    racy_window_s: float = RACY_WINDOW_S,
    now_ns: int | None = None,
) -> Verification:
    """Check every file of the variant against the manifest's size and sha256 (raises ArtifactError),
    trusting files the verify cache in `cache_dir` vouches for; records the files it hashed there.
    `now_ns`: the wall clock the racy window is measured from (default: the time of the check)."""
    started = time.perf_counter()
    wall_ns = time.time_ns() if now_ns is None else now_ns
    root = directory.resolve()
    cache = VerifyCache(cache_dir) if cache_dir is not None else None
    entries = cache.read() if cache is not None else {}
    checks: list[FileCheck] = []
    verified: dict[Path, tuple[FileStat, str]] = {}
    for relative in variant_files(manifest, variant):
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise ArtifactError(f"manifest file {relative!r} points outside the artifact directory")
        if not path.is_file():
            raise ArtifactError(f"variant {variant.name!r}: {path} is missing")
        entry = manifest.files[relative]
        try:
            before = FileStat.of(path)
        except OSError as exc:
            raise ArtifactError(f"variant {variant.name!r}: cannot stat {path}: {exc.strerror}") from None
        if before.size != entry.size_bytes:
            raise ArtifactError(
                f"variant {variant.name!r}: {relative} is {before.size} bytes, but the manifest says "
                f"{entry.size_bytes}; the file was modified or truncated — re-run compression or fix the "
                "manifest"
            )
        cached = entries.get(str(path))
        if cached is not None and cached.sha256 == entry.sha256 and cached.stat == before:
            checks.append(FileCheck(relative, before.size, True, 0.0))
            continue
        hash_started = time.perf_counter()
        actual = sha256_file(path)
        hash_seconds = time.perf_counter() - hash_started
        if actual != entry.sha256:
            raise ArtifactError(
                f"variant {variant.name!r}: sha256 of {relative} is {actual}, but the manifest says "
                f"{entry.sha256}; the file was modified or corrupted — re-run compression or fix the manifest"
            )
        checks.append(FileCheck(relative, before.size, False, hash_seconds))
        with contextlib.suppress(OSError):
            # Recorded only if nothing changed while hashing and the last change is not racily recent.
            if FileStat.of(path) == before and max(before.mtime_ns, before.ctime_ns) <= wall_ns - int(
                racy_window_s * 1e9
            ):
                verified[path] = (before, actual)
    if cache is not None:
        cache.record(verified)
    return Verification(root / variant.file, tuple(checks), time.perf_counter() - started, cache_dir)


def verify_variant(directory: Path, manifest: Manifest, variant: Variant, cache_dir: Path | None = None) -> Path:
    """Check every file of the variant against the manifest, with the verify cache in `cache_dir`
    (`frugal serve --verify-cache-dir`; none: hash every file), and log how; returns the ONNX file."""
    result = check_variant(directory, manifest, variant, cache_dir)
    log.info("%s", result.summary(variant.name))
    return result.path
