"""A batch's output directory: where it writes (`Layout`), the completion markers, the lock, and
writes that never go through a link.

Every file is created and renamed relative to its directory opened with ``O_NOFOLLOW`` (``shards/``;
the output directory itself is the user's to choose, link or not), through a temporary name, so
readers see all or nothing and a link planted or swapped in is refused, never followed. See
:mod:`frugal.serving.batch.engine` for the rules a run applies to the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK
from typing import IO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frugal.serving.batch.inputs import BatchError

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

    output: Path

    @property
    def shards(self) -> Path:
        return self.output / SHARDS

    @property
    def predictions(self) -> Path:
        return self.output / PREDICTIONS

    @property
    def summary(self) -> Path:
        return self.output / SUMMARY

    def part(self, shard: int) -> Path:
        return self.shards / f"part-{shard:05d}.npz"

    def marker(self, shard: int) -> Path:
        return self.shards / f"part-{shard:05d}{MARKER_SUFFIX}"


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """The output's lock: settling (refusing, discarding) and aggregating happen one process at a time."""
    lock = layout.output / LOCK
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
            raise planted(path)
    if layout.shards.is_dir():
        with os.scandir(layout.shards) as entries:
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


def read_marker(path: Path) -> Marker | None:
    """The marker at `path`, or None when there is none (or it is unreadable: then it is redone)."""
    try:
        return Marker.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def markers_in(layout: Layout) -> dict[Path, Marker | None]:
    if not layout.shards.is_dir():
        return {}
    return {path: read_marker(path) for path in sorted(layout.shards.glob(f"part-*{MARKER_SUFFIX}"))}


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


def write_npz(layout: Layout, target: Path, arrays: Mapping[str, np.ndarray]) -> None:
    savez: Callable[..., None] = np.savez  # its stub types **kwds as its own flags
    write_atomically(layout, target, lambda out: savez(out, **arrays))


def write_json(layout: Layout, target: Path, document: BaseModel, durable: bool = True) -> None:
    text = document.model_dump_json(by_alias=True, indent=2).encode()
    write_atomically(layout, target, lambda out: out.write(text), durable)
