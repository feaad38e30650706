"""A batch's input: which files, how many rows, cut into shards, checked against the model's inputs.

The input is an ``.npz`` file, a ``.parquet`` file, or a directory of such files read in name order;
in an object store (``s3://bucket/key``), one such object or every such object directly under a prefix,
likewise in name order (:func:`data_location`).
An ``.npz`` holds one array per model input (other keys, e.g. ``labels``, are ignored), as the
compression component's data files do; a ``.parquet`` holds one column per input, each row a scalar
or a (nested) list of one length (a vector or matrix input), as `frugal.compression.loaders` reads
them. Serving never imports compression, so the reading is written again here.

Each file is cut into ranges of ``rowsPerShard`` rows, numbered across files in input order, so
every worker and the aggregator derive the same shards from the input alone. Planning reads only
metadata (an ``.npz`` member's header, a ``.parquet`` footer), so a worker does not read the whole
dataset to find its share (an object's metadata comes in ranged reads of its file object); what only the rows can tell (the lengths of a list column's rows, nulls)
is checked when a shard is read. Every problem is a :class:`BatchError` with a one-line message
naming the file, the input and what the model expects.

Metadata is declared, not measured: a 400-byte ``.npz`` can declare 10^12 rows, and planning a
shard per ``rowsPerShard`` of them would take every process that plans it (each worker, and the
operator's progress poll every 10 s) out of memory. So every declared size is checked against the
bytes that back it before anything is planned: an ``.npz`` member's rows against the member's stored
bytes (stored: exactly; deflated: the most deflate can inflate them to, 1032 to 1; other zip methods
are refused), a ``.parquet`` footer's rows against its row groups and the bytes of its column
chunks (at most `PARQUET_ROWS_PER_BYTE` rows a byte, far above what any encoding reaches), and the
plan itself to `MAX_SHARDS` shards, counted before a shard is made.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np
from upath import UPath

from frugal.serving.datatypes import oip_of_numpy
from frugal.serving.server.artifacts import TensorSpec
from frugal.storage import object_io, object_store
from frugal.storage.object_store import Location, ObjectStoreError, is_remote

SUFFIXES = (".npz", ".parquet")
PVC_ROOT_ENV = "FRUGAL_PVC_ROOT"
DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion: a 258-byte match in about two bits
PARQUET_ROWS_PER_BYTE = 4096  # pyarrow writes a constant column at ~300 rows a byte at most
MAX_SHARDS = 100_000  # a plan this size is ~15 MB in each process that makes it
METADATA_BLOCK = 1 << 16  # an object's metadata is read in ranges of this many bytes
# What a format's reader raises for bytes it cannot parse; anything else reading an object is the store's.
NPZ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError)
FORMAT_ERRORS = (ValueError, KeyError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError)


class BatchError(Exception):
    """The batch cannot run as asked; the message (one line) says what is wrong and where."""


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (library messages often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def local_path(uri: str, field: str) -> Path:
    """A plain path or ``file://`` as is; ``pvc://claim/path`` under ``$FRUGAL_PVC_ROOT`` (where a
    claim is mounted). Object stores are not read by the worker: the operator mounts claims instead."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.netloc + parsed.path if parsed.scheme == "file" else uri)
    if parsed.scheme == "pvc":
        root = os.environ.get(PVC_ROOT_ENV)
        if not root:
            raise BatchError(f"{field}: {uri} is on a PersistentVolumeClaim; mount it and set {PVC_ROOT_ENV}")
        return Path(root) / parsed.netloc / parsed.path.lstrip("/")
    raise BatchError(f"{field}: {uri}: a batch reads local paths, file:// or pvc:// (not {parsed.scheme}://)")


def data_location(uri: str, field: str) -> Location:
    """Where a batch reads its input or writes its output: an object store's URI (``s3://``) as a
    ``UPath`` whose connection comes from the environment (``FSSPEC_S3``, ``AWS_*``), anything else as
    :func:`local_path` makes it."""
    if object_store.is_object_store(uri):
        return object_store.location(uri)
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file", "pvc"):
        raise BatchError(
            f"{field}: {uri}: a batch reads local paths, file://, pvc:// or s3:// (not {scheme}://)"
        )
    return local_path(uri, field)


def input_files(root: Location) -> list[Location]:
    """The input's files in input order: the file itself, or a directory's data files by name (in an
    object store: the object, or the objects directly under the prefix)."""
    if isinstance(root, UPath):
        return _input_objects(root)
    if root.is_dir():
        files: list[Location] = sorted(
            (p for p in root.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        files = [p for p in files if p.is_file()]
        if not files:
            raise BatchError(f"input {root} holds no .npz or .parquet files")
        return files
    if not root.exists():
        raise BatchError(f"input {root} does not exist")
    if root.suffix.lower() not in SUFFIXES:
        raise BatchError(f"input {root} is neither an .npz nor a .parquet file (nor a directory of them)")
    return [root]


def _input_objects(root: UPath) -> list[Location]:
    try:
        prefix = object_io.is_prefix(root)
    except FileNotFoundError:
        raise BatchError(f"input {root} does not exist") from None
    if not prefix:
        if root.suffix.lower() not in SUFFIXES:
            raise BatchError(f"input {root} is neither an .npz nor a .parquet object (nor a prefix of them)")
        return [root]
    files: list[Location] = [
        entry.path
        for entry in object_io.list_objects(root)
        if entry.path.suffix.lower() in SUFFIXES and not entry.path.name.startswith(".")
    ]
    if not files:
        raise BatchError(f"input {root} holds no .npz or .parquet objects")
    return files


# ------------------------------------------------------------------------------------------ checks


def describe_spec(spec: TensorSpec) -> str:
    return f"{spec.datatype} {list(spec.shape)}"


def check_column(
    path: Location, spec: TensorSpec, shape: Sequence[int | None], dtype: np.dtype[Any] | None
) -> None:
    """The column must have the spec's rank, fixed dimensions and datatype (None: not known yet)."""
    where = f"{path}: input {spec.name!r}"
    shown = [d if d is not None else "?" for d in shape]
    if len(shape) != len(spec.shape):
        raise BatchError(
            f"{where} has shape {shown} (rank {len(shape)}), the model expects {describe_spec(spec)} "
            f"(rank {len(spec.shape)}, -1 = any size)"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if axis and want >= 0 and got is not None and got != want:
            raise BatchError(
                f"{where} has shape {shown}, the model expects {describe_spec(spec)} (dim {axis} must be {want})"
            )
    datatype = oip_of_numpy(dtype) if dtype is not None else None
    if datatype != spec.datatype:
        got_type = f"{datatype} ({dtype})" if datatype else f"of a type with no tensor datatype ({dtype})"
        raise BatchError(f"{where} is {got_type}, the model expects {spec.datatype}")


# ------------------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class Column:
    """What a file's metadata says of one input: its shape (None: known only from the rows) and dtype."""

    shape: tuple[int | None, ...]
    dtype: np.dtype[Any] | None


@dataclass(frozen=True)
class FileInfo:
    path: Location
    rows: int
    size: int = 0  # bytes, and the modification time (an object's LastModified): what the markers record
    mtime_ns: int = 0


def describe(path: Location, specs: Sequence[TensorSpec]) -> FileInfo:
    """The file's row count, size and modification time, after checking from its metadata that it holds
    every input as the model expects it (raises BatchError; an object store's failure reading it is an
    ObjectStoreError)."""
    parquet = _is_parquet(path)
    with _reading(path):
        size, mtime_ns = object_io.identity(path)
        columns = _parquet_columns(path, size) if parquet else _npz_columns(path, size)
    kind = "column" if parquet else "array"
    rows: set[int | None] = set()
    for spec in specs:
        if spec.name not in columns:
            raise BatchError(
                f"{path}: no {kind} named {spec.name!r}; the model's inputs are {[s.name for s in specs]} "
                f"(the file has {sorted(columns)})"
            )
        column = columns[spec.name]
        check_column(path, spec, column.shape, column.dtype)
        rows.add(column.shape[0])
    if len(rows) > 1:
        raise BatchError(f"{path}: the inputs have different numbers of rows {sorted(r or 0 for r in rows)}")
    return FileInfo(path, int(rows.pop() or 0), size, mtime_ns)


def _is_parquet(path: Location) -> bool:
    return path.suffix.lower() == ".parquet"


@contextlib.contextmanager
def _reading(path: Location) -> Iterator[None]:
    """What reading `path` raises, as a batch reports it: bytes its format's reader cannot parse as a
    BatchError "cannot read", and for an object anything else (a refused key, an unreachable store)
    as the ObjectStoreError naming it. (zipfile raises RuntimeError for an encrypted member,
    NotImplementedError for an unknown method; pyarrow its own exceptions.)"""
    parquet = _is_parquet(path)
    arrow = (_pyarrow().ArrowException,) if parquet else ()
    try:
        yield
    except (BatchError, ObjectStoreError):
        raise
    except Exception as exc:
        if is_remote(path) and not isinstance(exc, FORMAT_ERRORS + arrow):
            raise object_store.failure(str(path), exc) from None
        if isinstance(exc, (OSError, ValueError, *arrow) if parquet else NPZ_ERRORS):
            raise BatchError(
                f"cannot read {path} as {'.parquet' if parquet else '.npz'} ({one_line(exc)})"
            ) from None
        raise


@contextlib.contextmanager
def _source(
    path: Location, size: int | None = None, block_size: int | None = None
) -> Iterator[Path | IO[bytes]]:
    """What a format's reader opens: a local path as it is, an object as a file object whose reads are
    ranged GETs of `block_size` bytes (the object's `size` known, no HEAD is asked again)."""
    if not isinstance(path, UPath):
        yield path
        return
    options: dict[str, Any] = {"size": size} if size is not None else {}
    if block_size is not None:
        options["block_size"] = block_size
    with path.open("rb", **options) as handle:
        yield handle


def _npz_columns(path: Location, size: int) -> dict[str, Column]:
    """Each array's shape and dtype from its ``.npy`` header, without reading the array, after checking
    that the member's real bytes (the archive being `size` bytes) can hold what the header declares."""
    columns: dict[str, Column] = {}
    with _source(path, size, METADATA_BLOCK) as source, zipfile.ZipFile(source) as archive:
        for member in archive.infolist():
            if member.filename.endswith(".npy"):
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(handle)
                    header = handle.tell()
                name = member.filename.removesuffix(".npy")
                _check_npy_size(path, name, member, size, header, tuple(shape), np.dtype(dtype))
                columns[name] = Column(tuple(shape), np.dtype(dtype))
    return columns


def _check_npy_size(
    path: Location, name: str, member: zipfile.ZipInfo, archive_size: int, header: int,
    shape: tuple[int, ...], dtype: np.dtype[Any],
) -> None:  # fmt: skip
    """Refuse a header whose shape the member's bytes cannot back: stored, the array is the bytes after
    the header; deflated, the most those bytes inflate to (every row counted as one byte at least, so
    rows of nothing cannot be declared by the trillion either)."""
    where = f"{path}: array {name!r}"
    if any(d < 0 for d in shape):
        raise BatchError(f"{where} declares the shape {list(shape)}, with a negative dimension")
    rows = shape[0] if shape else 1
    row_bytes = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    needed = rows * max(row_bytes, 1)
    stored = min(member.compress_size, archive_size)
    if member.compress_type == zipfile.ZIP_STORED:
        holds, how = min(stored, member.file_size) - header, ""
    elif member.compress_type == zipfile.ZIP_DEFLATED:
        holds = min(member.file_size, stored * DEFLATE_MAX_RATIO) - header
        how = f" once inflated ({stored} bytes deflated, {DEFLATE_MAX_RATIO}× at most)"
    else:
        raise BatchError(
            f"{where} is compressed with zip method {member.compress_type}; a batch reads .npz members "
            "stored or deflated (as np.savez and np.savez_compressed write them)"
        )
    if needed > holds:
        raise BatchError(
            f"{where} declares {rows} rows but holds {max(holds, 0)} bytes{how}: its {dtype} rows of "
            f"{list(shape[1:])} need {needed} bytes (the header does not match the data)"
        )


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise BatchError("reading .parquet needs pyarrow, which this installation lacks") from None
    return pyarrow


def _parquet_columns(path: Location, size: int) -> dict[str, Column]:
    """Each column's rank, fixed list sizes and leaf dtype from the file's footer, after checking the
    footer's row count against its row groups and the bytes (`size` in all) of its column chunks."""
    pa = _pyarrow()
    with _source(path, size, METADATA_BLOCK) as source:
        handle = pa.parquet.ParquetFile(source)
        metadata, schema = handle.metadata, handle.schema_arrow
    rows = metadata.num_rows
    _check_parquet_size(path, metadata, size)
    columns: dict[str, Column] = {}
    for field in schema:
        shape: list[int | None] = [rows]
        leaf = field.type
        while _is_list(pa, leaf):
            shape.append(leaf.list_size if pa.types.is_fixed_size_list(leaf) else None)
            leaf = leaf.value_type
        columns[field.name] = Column(tuple(shape), _leaf_dtype(leaf))
    return columns


def _check_parquet_size(path: Location, metadata: Any, size: int) -> None:
    """The footer's rows must be its row groups' rows, every column chunk must lie inside the file, and
    the rows must fit in the chunks' bytes at `PARQUET_ROWS_PER_BYTE` rows a byte at most."""
    rows = metadata.num_rows
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    in_groups = sum(group.num_rows for group in groups)
    if rows < 0 or in_groups != rows or any(group.num_rows < 0 for group in groups):
        raise BatchError(f"{path}: the footer declares {rows} rows but its row groups hold {in_groups} rows")
    data = 0
    for group in groups:
        for index in range(group.num_columns):
            chunk = group.column(index)
            start = min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o is not None)
            length = chunk.total_compressed_size
            if start < 0 or length < 0 or start + length > size:
                raise BatchError(
                    f"{path}: column {chunk.path_in_schema!r} declares {length} bytes at offset {start} "
                    f"but the file holds {size} bytes"
                )
            data += length
    if rows > PARQUET_ROWS_PER_BYTE * data:
        raise BatchError(
            f"{path}: declares {rows} rows but holds {data} bytes of column data (at most "
            f"{PARQUET_ROWS_PER_BYTE} rows a byte: the footer does not match the data)"
        )


def _is_list(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _leaf_dtype(leaf: Any) -> np.dtype[Any] | None:
    try:
        return np.dtype(leaf.to_pandas_dtype())
    except (NotImplementedError, TypeError):
        return None


# ------------------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of one input file; ``index`` counts shards across files in input order."""

    index: int
    file: Location
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan(files: Sequence[FileInfo], rows_per_shard: int) -> list[Shard]:
    """Every file cut into ranges of `rows_per_shard` rows (the last of a file may be shorter); an empty
    file has no shards. More than `MAX_SHARDS` is a BatchError, counted before a shard is made."""
    count = sum(-(-info.rows // rows_per_shard) for info in files)
    if count > MAX_SHARDS:
        rows = sum(info.rows for info in files)
        raise BatchError(
            f"the input's {rows} rows in shards of {rows_per_shard} rows are {count} shards, more than the "
            f"{MAX_SHARDS} a batch plans: raise rowsPerShard to {-(-rows // MAX_SHARDS)} or more"
        )
    shards: list[Shard] = []
    for info in files:
        for start in range(0, info.rows, rows_per_shard):
            shards.append(Shard(len(shards), info.path, start, min(start + rows_per_shard, info.rows)))
    return shards


class ShardReader:
    """Reads shards' rows, keeping the last file's arrays: a worker's shards of one file follow each
    other, and reading a whole file again per shard would cost a quadratic amount of reading."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        self._file: Location | None = None
        self._arrays: Mapping[str, Any] = {}

    def read(self, shard: Shard) -> dict[str, np.ndarray]:
        if self._file != shard.file:
            self._arrays = self._load(shard.file)
            self._file = shard.file
        rows: dict[str, np.ndarray] = {}
        for spec in self.specs:
            array = self._rows(shard, self._arrays[spec.name], spec.name)
            check_column(shard.file, spec, array.shape, array.dtype)
            rows[spec.name] = array
        return rows

    def _load(self, path: Location) -> Mapping[str, Any]:
        names = [spec.name for spec in self.specs]
        with _reading(path), _source(path) as source:
            if _is_parquet(path):
                table = _pyarrow().parquet.read_table(source, columns=names)
                return {name: table.column(name) for name in names}
            with np.load(source, allow_pickle=False) as handle:
                return {name: handle[name] for name in names}

    @staticmethod
    def _rows(shard: Shard, column: Any, name: str) -> np.ndarray:
        if isinstance(column, np.ndarray):
            return column[shard.start : shard.stop]
        return parquet_rows(column.slice(shard.start, shard.rows), shard.file, name)


def parquet_rows(column: Any, path: Location, name: str) -> np.ndarray:
    """A (chunked) Arrow column as one array: a list level becomes a dimension when all its rows have
    one length (fixed-size lists always do); nulls and ragged rows are a BatchError."""
    pa = _pyarrow()
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows, dims = len(array), []
    while True:
        if array.null_count:
            raise BatchError(f"{path}: column {name!r} has missing values (nulls) among rows")
        if not _is_list(pa, array.type):
            break
        lengths = np.unique(pa.compute.list_value_length(array).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise BatchError(
                f"{path}: column {name!r} has rows of different lengths {lengths[:5].tolist()}; "
                "a model input needs rows of one shape"
            )
        dims.append(int(lengths[0]) if len(lengths) else 0)
        array = array.flatten()
    flat = array.to_numpy(zero_copy_only=False)
    return flat.reshape(rows, *dims)
