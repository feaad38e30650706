"""A batch's output under an object store's prefix: the layout of an output directory, written without
a lock or a rename (see :mod:`frugal.serving.batch.engine` for the rules).

Each object is written whole in ONE PUT (serialised in memory first), so a reader sees it all or not
at all: a part before its marker, the summary before the predictions. A bucket has no links, so the
link refusals of a directory do not apply. Overwriting a finished run takes no lock either: the
process that finds ``predictions.npz`` removes ``summary.json``, then only the shard objects no newer
than the predictions (:func:`left_by_finished_run`: a concurrent worker's fresh shards are newer and
stay), then ``predictions.npz`` itself.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel
from upath import UPath

from frugal.serving.batch.output_dir import MARKER_SUFFIX, PREDICTIONS, Layout, json_bytes, read_npz
from frugal.storage import object_io
from frugal.storage.object_store import Location


def left_by_finished_run(objects: Iterable[tuple[str, int]], finished_ns: int) -> list[str]:
    """The names among `objects` ((name, LastModified in ns) of each shard object) that a finished run
    left: those not modified after its predictions (`finished_ns`), in name order."""
    return sorted(name for name, modified in objects if modified <= finished_ns)


@dataclass(frozen=True)
class BucketOutput:
    """An output under a bucket's prefix (`frugal.serving.batch.output_dir.OutputFiles`)."""

    layout: Layout

    def guarded(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()  # no lock: see the module's docstring

    def exists(self, path: Location) -> bool:
        return object_io.object_exists(remote(path))

    def is_file(self, path: Location) -> bool:
        return self.exists(path)

    def refuse_links(self, *paths: Location) -> None:
        pass  # a bucket holds no links

    def discard_finished(self) -> None:
        predictions = [
            e for e in object_io.list_objects(remote(self.layout.output)) if e.path.name == PREDICTIONS
        ]
        if not predictions:
            return  # another process is discarding it
        object_io.remove_objects([remote(self.layout.summary)])
        shards = remote(self.layout.shards)
        entries = object_io.list_objects(shards)
        old = left_by_finished_run(
            ((e.path.name, e.modified_ns) for e in entries), predictions[0].modified_ns
        )
        self._remove(shards / name for name in old)
        object_io.remove_objects([predictions[0].path])  # last: until it is gone the run reads as finished

    def remove_shards(self, markers: Sequence[Location]) -> None:
        self._remove(
            [*(remote(path) for path in markers), *(remote(path).with_suffix(".npz") for path in markers)]
        )

    @staticmethod
    def _remove(paths: Iterable[UPath]) -> None:
        """Markers first, then parts: two requests, so no marker outlives its part."""
        ordered = list(paths)
        object_io.remove_objects([p for p in ordered if p.name.endswith(MARKER_SUFFIX)])
        object_io.remove_objects([p for p in ordered if not p.name.endswith(MARKER_SUFFIX)])

    def prepare(self) -> None:
        pass  # prefixes need no creating

    def write_npz(self, target: Location, arrays: Mapping[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        savez: Callable[..., None] = np.savez  # its stub types **kwds as its own flags
        savez(buffer, **arrays)
        object_io.write_object(remote(target), buffer.getvalue())

    def write_json(self, target: Location, document: BaseModel, durable: bool = True) -> None:
        object_io.write_object(remote(target), json_bytes(document))  # a PUT is durable once answered

    def load_npz(self, path: Location) -> dict[str, np.ndarray]:
        return read_npz(io.BytesIO(object_io.read_object(remote(path))))


def remote(path: Location) -> UPath:
    """`path` of an output in a bucket (a bucket's paths are never this machine's)."""
    assert isinstance(path, UPath), path
    return path
