"""Objects read and written one at a time, as data rather than artifacts: a batch's input and output.

Beside :mod:`frugal.storage.object_store` (locations, settings, publishing a directory), these are the
single-object operations a process needs to keep its own records in a bucket: an object's identity
(size and LastModified), a fresh listing of a prefix, and reads, one-PUT writes and deletes. Every
failure is an :class:`~frugal.storage.object_store.ObjectStoreError` naming the URI and the error's
class (never a key), as :func:`~frugal.storage.object_store.failure` classifies it; a missing object
stays a FileNotFoundError for a reader.

Nothing here reads fsspec's listing cache: an instance (and its cache) lives as long as the process,
so a process that polls a prefix (the operator) would see it as it first listed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from upath import UPath

from frugal.storage.object_store import Location, ObjectStoreError, failure

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Where each fsspec implementation's info puts an object's modification time (s3fs first).
MODIFIED_KEYS = ("LastModified", "last_modified", "updated", "mtime")


@dataclass(frozen=True)
class ObjectEntry:
    """One object of a listing: where it is, its size and its LastModified in ns."""

    path: UPath
    size: int
    modified_ns: int


@contextlib.contextmanager
def errors_named(uri: str, missing_is_refusal: bool = False) -> Iterator[None]:
    """Raise whatever the block raises as an ObjectStoreError naming `uri`, except a missing object's
    FileNotFoundError for a reader (with `missing_is_refusal`, for a write, it means no bucket)."""
    try:
        yield
    except ObjectStoreError:
        raise
    except FileNotFoundError as exc:
        if not missing_is_refusal:
            raise
        raise failure(uri, exc) from None
    except Exception as exc:
        raise failure(uri, exc) from None


def modified_ns(info: Mapping[str, Any]) -> int:
    """An object's modification time (s3fs: LastModified) from fsspec's info, in ns since the epoch,
    computed in integers (a float of ns since 1970 is off by up to 256 ns)."""
    when = next((info[key] for key in MODIFIED_KEYS if info.get(key) not in (None, "")), None)
    if when is None:
        raise KeyError(f"{info.get('name', 'the object')} has no modification time")
    if isinstance(when, int | float):  # seconds since the epoch
        return int(when * 1_000_000_000)
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int((when - EPOCH) // timedelta(microseconds=1) * 1000)


def identity(path: Location) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file, or of an object: its size and LastModified
    from a HEAD, which is what ``UPath.stat()`` reports (``st_size``, ``st_mtime_ns``) but asked of the
    store each time, never of fsspec's listing cache (whose dates may also be finer than a HEAD's, so
    two processes would disagree). FileNotFoundError when it is missing (or is a prefix)."""
    if not isinstance(path, UPath):
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    with errors_named(str(path)):
        info = path.fs.info(path.path, refresh=True)
    if info.get("type") != "file":
        raise FileNotFoundError(f"{path} is not an object")
    return int(info["size"]), modified_ns(info)


def object_exists(path: UPath) -> bool:
    """Whether `path` is an object, asked of the store."""
    try:
        identity(path)
    except FileNotFoundError:
        return False
    return True


def is_prefix(path: UPath) -> bool:
    """Whether objects lie under `path` (it is a "directory"); FileNotFoundError when nothing is there,
    neither an object nor a prefix (nor a bucket)."""
    with errors_named(str(path)):
        info = path.fs.info(path.path, refresh=True)
    return info.get("type") != "file"


def list_objects(prefix: UPath) -> list[ObjectEntry]:
    """The objects directly under `prefix` (not those in its sub-prefixes), listed afresh, in name order;
    none when nothing is there."""
    try:
        with errors_named(str(prefix)):
            entries = prefix.fs.ls(prefix.path, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    found = [
        ObjectEntry(prefix / PurePosixPath(entry["name"]).name, int(entry["size"]), modified_ns(entry))
        for entry in entries
        if entry.get("type") == "file"
    ]
    return sorted(found, key=lambda entry: entry.path.name)


def read_object(path: Location) -> bytes:
    """The bytes of a file or an object (one GET). FileNotFoundError when it is missing."""
    if not isinstance(path, UPath):
        return path.read_bytes()
    with errors_named(str(path)):
        return bytes(path.fs.cat_file(path.path))


def read_objects(paths: Sequence[UPath]) -> dict[UPath, bytes | None]:
    """Objects of one store fetched concurrently: each one's bytes, None for one that is missing."""
    if not paths:
        return {}
    with errors_named(str(paths[0].parent)):
        found = paths[0].fs.cat([path.path for path in paths], on_error="return")
    result: dict[UPath, bytes | None] = {}
    for path in paths:
        value = found.get(path.path, FileNotFoundError())
        if isinstance(value, FileNotFoundError):
            result[path] = None
        elif isinstance(value, BaseException):
            raise failure(str(path), value)
        else:
            result[path] = bytes(value)
    return result


def write_object(path: UPath, data: bytes) -> None:
    """`data` as the object at `path`, in ONE PUT: a reader sees the object as it was, or none, or all of
    this. Any failure, a missing bucket included, is an ObjectStoreError."""
    with errors_named(str(path), missing_is_refusal=True):
        path.fs.pipe_file(path.path, data)


def remove_objects(paths: Sequence[UPath]) -> None:
    """Delete objects of one store (batched requests, in no set order); a missing one is no error."""
    if not paths:
        return
    with errors_named(str(paths[0].parent), missing_is_refusal=True):
        paths[0].fs.rm([path.path for path in paths])
