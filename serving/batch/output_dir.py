"""A batch's output directory: where it writes (`Layout`), the completion markers, the lock, and
writes that never go through a link.

Every file is created and renamed relative to its directory opened with ``O_NOFOLLOW`` (``shards/``;
the output directory itself is the user's to choose, link or not), through a temporary name, so
readers see all or nothing and a link planted or swapped in is refused, never followed. See
:mod:`frugal.serving.batch.engine` for the rules a run applies to the directory.

An output in an object store has the same layout under its prefix and is written by
:mod:`frugal.serving.batch.bucket_output`; a run reaches either through :class:`OutputFiles`. Reading
progress (:func:`markers_in`, :func:`read_marker`, :func:`read_summary`) works on both, given a
``Path`` or a ``UPath`` (the operator's, with its own keys).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK
from typing import IO, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from upath import UPath

from frugal.serving.batch.inputs import BatchError
from frugal.storage import object_io
from frugal.storage.object_store import Location, ObjectStoreError

SHARDS, PREDICTIONS, SUMMARY, LOCK = "shards", "predictions.npz", "summary.json", ".batch.lock"
MARKER_SUFFIX = ".done"
FILE_MODE = 0o644  # readable by whoever reads the results (mkstemp's own is 0600)


class Marker(BaseModel):
    """A finished shard: which rows of which input it holds, how long it took, and who computed it.
    ``inputSize``/``inputMtimeNs`` and ``modelSha256`` tell a resumed run's shards from another's."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    shard: int
    file: str  # the input file's name
    start: int
    stop: int
    rows: int
    input_size: int = Field(alias="inputSize")
    input_mtime_ns: int = Field(alias="inputMtimeNs")
    model_sha256: str = Field(alias="modelSha256")
    seconds: float  # reading, scoring and writing the shard
    started_at: float = Field(alias="startedAt")  # Unix time
    finished_at: float = Field(alias="finishedAt")
    worker: int  # the worker's index
    workers: int  # the worker count it was started with
    pid: int
    host: str  # the machine (in a pod: the pod's name), so pids of different pods stay apart


@dataclass(frozen=True)
class Layout:
    """Where a batch writes inside its output directory."""

    output: Location  # a directory here, or a prefix in an object store

    @property
    def shards(self) -> Location:
        return self.output / SHARDS

    @property
    def predictions(self) -> Location:
        return self.output / PREDICTIONS

    @property
    def summary(self) -> Location:
        return self.output / SUMMARY

    def part(self, shard: int) -> Location:
        return self.shards / f"part-{shard:05d}.npz"

    def marker(self, shard: int) -> Location:
        return self.shards / f"part-{shard:05d}{MARKER_SUFFIX}"


class OutputFiles(Protocol):
    """How a run touches its output: a directory here (:class:`LocalOutput`: a lock, no links, files
    renamed into place) or a bucket's prefix (`bucket_output.BucketOutput`: one PUT an object)."""

    @property
    def layout(self) -> Layout: ...

    def guarded(self) -> AbstractContextManager[None]:
        """Held while a process settles or aggregates the output."""
        ...

    def exists(self, path: Location) -> bool: ...

    def is_file(self, path: Location) -> bool: ...

    def refuse_links(self, *paths: Location) -> None:
        """BatchError for a symbolic link at any of `paths`."""
        ...

    def discard_finished(self) -> None:
        """Remove a finished run (overwrite): the summary, its shards, the predictions last."""
        ...

    def remove_shards(self, markers: Sequence[Location]) -> None:
        """Remove these markers and their parts (shards of another input or model)."""
        ...

    def prepare(self) -> None:
        """Ready to write shards."""
        ...

    def write_npz(self, target: Location, arrays: Mapping[str, np.ndarray]) -> None: ...

    def write_json(self, target: Location, document: BaseModel, durable: bool = True) -> None: ...

    def load_npz(self, path: Location) -> dict[str, np.ndarray]: ...


def local(path: Location) -> Path:
    """`path` of an output on this machine (a local output's paths are never a bucket's)."""
    assert isinstance(path, Path), path
    return path


@dataclass(frozen=True)
class LocalOutput:
    """An output directory on this machine: see the module's docstring."""

    layout: Layout

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        with locked(self.layout):
            refuse_links(self.layout)
            yield

    def exists(self, path: Location) -> bool:
        return path.exists()

    def is_file(self, path: Location) -> bool:
        return path.is_file()

    def refuse_links(self, *paths: Location) -> None:
        for path in paths:
            if path.is_symlink():
                raise planted(local(path))

    def discard_finished(self) -> None:
        layout = self.layout
        layout.summary.unlink(missing_ok=True)
        shutil.rmtree(local(layout.shards), ignore_errors=True)
        layout.predictions.unlink()  # last: until it is gone the run still reads as finished

    def remove_shards(self, markers: Sequence[Location]) -> None:
        shards = open_dir(
            local(self.layout.shards)
        )  # removed relative to it: a link swapped in is not followed
        try:
            for path in markers:
                for name in (path.name, path.with_suffix(".npz").name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=shards)
        finally:
            os.close(shards)

    def prepare(self) -> None:
        make_dir(local(self.layout.shards))

    def write_npz(self, target: Location, arrays: Mapping[str, np.ndarray]) -> None:
        savez: Callable[..., None] = np.savez  # its stub types **kwds as its own flags
        write_atomically(self.layout, local(target), lambda out: savez(out, **arrays))

    def write_json(self, target: Location, document: BaseModel, durable: bool = True) -> None:
        text = json_bytes(document)
        write_atomically(self.layout, local(target), lambda out: out.write(text), durable)

    def load_npz(self, path: Location) -> dict[str, np.ndarray]:
        return read_npz(local(path))


def read_npz(source: Path | IO[bytes]) -> dict[str, np.ndarray]:
    with np.load(source, allow_pickle=False) as handle:
        return {name: handle[name] for name in handle.files}


def json_bytes(document: BaseModel) -> bytes:
    return document.model_dump_json(by_alias=True, indent=2).encode()


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """The output's lock: settling (refusing, discarding) and aggregating happen one process at a time."""
    lock = local(layout.output) / LOCK
    try:
        layout.output.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if lock.is_symlink():
            raise planted(lock) from None
        raise BatchError(f"output {layout.output} is not writable: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def planted(path: Path) -> BatchError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return BatchError(
        f"{path} is a symbolic link{target} inside the batch's output: a batch writes only real files and "
        "directories there and never through a link; remove it or choose another output"
    )


def refuse_links(layout: Layout) -> None:
    """Raise BatchError when a symbolic link stands where the batch writes: ``shards/``, anything in it,
    ``predictions.npz``, ``summary.json`` or the lock."""
    for path in (layout.shards, layout.predictions, layout.summary, layout.output / LOCK):
        if path.is_symlink():
            raise planted(local(path))
    if layout.shards.is_dir():
        with os.scandir(local(layout.shards)) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise planted(Path(entry.path))


def open_dir(directory: Path, follow: bool = False) -> int:
    """`directory` opened to create and rename files in relative to it; a link in its place is refused
    (unless `follow`: the output directory itself, which the user names)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(directory, flags)
    except OSError:
        if not follow and directory.is_symlink():
            raise planted(directory) from None
        raise


def make_dir(directory: Path) -> None:
    """Create `directory` (its parent exists); one already there must be a real directory, not a link."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        if directory.is_symlink():
            raise planted(directory) from None
        if not directory.is_dir():
            raise BatchError(f"{directory} is not a directory; remove it or choose another output") from None


def refuse_finished(output: Path) -> None:
    """Raise BatchError when `output` holds a finished run: what a run without overwrite refuses, asked
    before anything starts."""
    layout = Layout(output)
    if layout.predictions.exists():
        raise refused_finished(layout)


def refused_finished(layout: Layout) -> BatchError:
    return BatchError(
        f"output {layout.output} already exists (it holds {PREDICTIONS} of a finished run): "
        "pass overwrite (--overwrite) or choose another output"
    )


def read_marker(path: Location) -> Marker | None:
    """The marker at `path` (a file or an object), or None when there is none (or it is unreadable: then
    it is redone). An object store's failure is an ObjectStoreError."""
    try:
        return _marker(object_io.read_object(path))
    except ObjectStoreError:
        raise
    except OSError:
        return None


def _marker(data: bytes | None) -> Marker | None:
    try:
        return Marker.model_validate_json(data) if data is not None else None
    except ValidationError:
        return None


def marker_paths(layout: Layout) -> list[Location]:
    """The markers there are, in shard order (a bucket's listed afresh)."""
    shards = layout.shards
    if isinstance(shards, UPath):
        return [e.path for e in object_io.list_objects(shards) if _is_marker(e.path.name)]
    if not shards.is_dir():
        return []
    return sorted(shards.glob(f"part-*{MARKER_SUFFIX}"))


def _is_marker(name: str) -> bool:
    return name.startswith("part-") and name.endswith(MARKER_SUFFIX)


def markers_in(layout: Layout) -> dict[Location, Marker | None]:
    """Every marker of the output (a directory or a bucket's prefix) and what it says (None:
    unreadable). A bucket's markers are fetched concurrently."""
    paths = marker_paths(layout)
    if isinstance(layout.shards, UPath):
        found = object_io.read_objects([path for path in paths if isinstance(path, UPath)])
        return {path: _marker(data) for path, data in found.items()}
    return {path: read_marker(path) for path in paths}


def read_summary(layout: Layout) -> dict[str, Any] | None:
    """The run's ``summary.json`` (a file or an object), or None when there is none yet (or it is not a
    JSON object). An object store's failure is an ObjectStoreError."""
    try:
        document = json.loads(object_io.read_object(layout.summary))
    except ObjectStoreError:
        raise
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def write_atomically(
    layout: Layout, target: Path, write: Callable[[IO[bytes]], object], durable: bool = True
) -> None:
    """Write through a temporary file in the same directory, then rename: readers see all or nothing.
    `durable` syncs the data to disk before the rename, so a machine crash cannot leave the name
    pointing at lost data; a marker is written without it (see `_score`). Both happen relative to the
    directory opened without following a link (see the module's docstring), and a link at `target`
    is refused rather than replaced."""
    directory = open_dir(target.parent, follow=target.parent == layout.output)
    try:
        if _is_link_at(target.name, directory):
            raise planted(target)
        temporary, handle = _create_temporary(target.name, directory)
        try:
            os.fchmod(handle, FILE_MODE)
            with os.fdopen(handle, "wb") as out:
                write(out)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            os.replace(temporary, target.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
    finally:
        os.close(directory)


def _is_link_at(name: str, directory: int) -> bool:
    try:
        return S_ISLNK(os.lstat(name, dir_fd=directory).st_mode)
    except FileNotFoundError:
        return False


def _create_temporary(name: str, directory: int) -> tuple[str, int]:
    """A new file ``.<name>.<random>.tmp`` in `directory` (created, never opened through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        temporary = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return temporary, os.open(temporary, flags, FILE_MODE, dir_fd=directory)
        except FileExistsError:
            continue
