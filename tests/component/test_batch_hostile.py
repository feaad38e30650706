"""Hostile inputs and outputs for the batch engine: what a user who means harm (or a file cut short)
hands `frugal batch`, `frugal batch-worker` and `frugal batch-aggregate`. Every case names the
defect class it guards.

Real files (a real `frugal compress` artifact, `.npz` and `.parquet` files written byte by byte),
real processes. The size bombs run in a child process under a memory limit (``RLIMIT_AS``) and a
timeout: on code that trusts the declared sizes they die of the limit in seconds, not of this
machine's memory.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from compression_support import compressed_digits

from frugal.serving.batch.engine import BatchConfig
from frugal.serving.batch.inputs import BatchError, FileInfo, plan

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "int8-dynamic"
MEMORY_LIMIT = 3 * 1024**3  # address space of a child: plenty for a worker, far short of a trillion rows
BOMB_TIMEOUT_S = 90
TRILLION = 10**12


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits MLP compressed by the project's own `frugal compress` (fp32 and int8-dynamic)."""
    return compressed_digits(tmp_path_factory.mktemp("artifacts") / "digits")


def config(tmp: Path, artifacts: Path, data: Path, **fields: Any) -> Path:
    values = {"input": str(data), "output": str(tmp / "out"), "artifacts": str(artifacts), "variant": VARIANT}
    batch = BatchConfig.model_validate(values | {"batchSize": 64, "rowsPerShard": 256, **fields})
    path = tmp / "batch.json"
    path.write_text(batch.model_dump_json(by_alias=True, exclude_none=True))
    return path


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def frugal(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`frugal ARGS` in its own process, under the memory limit and a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "frugal.operator.main", *args],
        capture_output=True, text=True, cwd=cwd, timeout=BOMB_TIMEOUT_S, check=False, preexec_fn=_limited,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ bombs


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def npz_bomb(folder: Path, method: int = zipfile.ZIP_STORED, shape: tuple[int, ...] = (TRILLION, 64)) -> Path:
    """A few hundred bytes: an ``input`` member whose header declares `shape` over four real rows."""
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("input.npy", npy_header(shape) + np.zeros((4, 64), np.float32).tobytes())
    return path


def npz_lying_zip_sizes(folder: Path) -> Path:
    """A deflated member whose zip entry also lies: it declares 2 GiB inflated for ~80 real bytes."""
    path = npz_bomb(folder, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("input.npy")
    for offset in (info.header_offset + 22, data.rindex(b"PK\x01\x02") + 24):  # local and central headers
        data[offset : offset + 4] = (0x7FFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def npz_zero_width_rows(folder: Path) -> Path:
    """Rows of nothing: 10^12 rows of shape (0,) need no bytes at all, so bytes alone cannot bound them."""
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("input.npy", npy_header((TRILLION, 0)))
    return path


def parquet_bomb(folder: Path) -> Path:
    """A real four-row parquet file whose footer (and row group) is rewritten to declare 10^12 rows."""
    table = pa.table({"input": pa.array([[0.0] * 64] * 4, type=pa.list_(pa.float32()))})
    path = folder / "bomb.parquet"
    pq.write_table(table, path, compression="none")
    data = path.read_bytes()
    footer_length = int.from_bytes(data[-8:-4], "little")
    footer = bytearray(data[-8 - footer_length : -8])
    # Thrift compact: num_rows (field 3 of FileMetaData, field 3 of RowGroup) are zigzag varints of 4.
    four, big = bytes([0x16, 0x08]), bytes([0x16]) + _varint(TRILLION * 2)
    assert footer.count(four) >= 2, "the footer's layout changed; find the row counts another way"
    footer = footer.replace(four, big)
    path.write_bytes(data[: -8 - footer_length] + bytes(footer) + len(footer).to_bytes(4, "little") + b"PAR1")
    assert pq.ParquetFile(path).metadata.num_rows == TRILLION
    return path


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


BOMBS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "npz stored": (npz_bomb, "declares 1000000000000 rows but holds 1024 bytes"),
    "npz deflated": (lambda f: npz_bomb(f, zipfile.ZIP_DEFLATED), "declares 1000000000000 rows but holds 1024 bytes once inflated"),
    "npz deflated, zip sizes lying too": (npz_lying_zip_sizes, "declares 1000000000000 rows but holds"),
    "npz rows of zero bytes": (npz_zero_width_rows, "declares 1000000000000 rows but holds 0 bytes"),
    "parquet footer": (parquet_bomb, "declares 1000000000000 rows but holds"),
}  # fmt: skip


@pytest.mark.parametrize("case", BOMBS)
def test_a_declared_row_count_is_checked_against_the_bytes_before_planning(
    case: str, tmp_path: Path, artifacts: Path
) -> None:
    """Defect class: declared sizes trusted. A few hundred bytes whose metadata declares 10^12 rows
    drove `frugal batch-worker` past 1.5 GiB in seconds (a shard planned per rowsPerShard declared
    rows); it is refused, one line naming the file and what is wrong, exit 2, nothing written."""
    make, mentions = BOMBS[case]
    data = make(tmp_path)
    assert data.stat().st_size < 2048
    done = frugal("batch-worker", "--config", str(config(tmp_path, artifacts, data)))
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"frugal batch-worker: error: {data}") and mentions in last, last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_too_many_shards_are_refused_before_one_is_made(tmp_path: Path) -> None:
    """Defect class: declared sizes trusted (the plan's own size). Even rows a file really holds are
    planned one shard object each in every worker and in the operator every 10 s: more shards than a
    batch plans is refused before one is made, with the rowsPerShard that would do."""
    files = [FileInfo(tmp_path / "a.npz", 150_000), FileInfo(tmp_path / "b.npz", 50_001)]
    with pytest.raises(
        BatchError, match="200001 shards, more than the 100000 a batch plans: raise rowsPerShard to 3"
    ):
        plan(files, 1)
    assert len(plan(files, 3)) == 66_667


def test_frugal_batch_refuses_a_trillion_row_header_in_the_operators_poll(
    tmp_path: Path, artifacts: Path
) -> None:
    """Defect class: declared sizes trusted, in the operator's progress poll. `frugal batch` runs the
    operator's BatchInference reconciler, which plans the input on every pass before any worker runs:
    the batch fails with the reason on its condition instead of eating the operator's memory."""
    data = npz_bomb(tmp_path)
    document = {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": "bomb"},
        "spec": {
            "model": {"artifacts": {"uri": f"file://{artifacts}", "variant": VARIANT}},
            "hardwareProfiles": ["local-cpu"],
            "input": {"uri": f"file://{data}"},
            "output": {"uri": f"file://{tmp_path / 'out'}", "overwrite": False},
            "maxWorkers": 1,
            "rowsPerShard": 128,
        },
    }
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(document))
    done = frugal(
        "batch", str(path), str(ROOT / "examples" / "digits.yaml"), "--workdir", str(tmp_path / "w")
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{data}: array 'input' declares 1000000000000 rows but holds 1024 bytes" in done.stderr
    assert not (tmp_path / "out" / "shards").exists()


# ------------------------------------------------------------------------------------------ links


@pytest.fixture
def good(tmp_path: Path, artifacts: Path) -> Path:
    data = tmp_path / "good.npz"
    np.savez(data, input=np.random.default_rng(0).random((300, 64), np.float32))
    return config(tmp_path, artifacts, data)


def _outside(tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "precious.txt").write_text("not the batch's")
    return elsewhere


def plant_shards(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "shards").symlink_to(_outside(tmp_path), target_is_directory=True)
    return tmp_path / "out" / "shards"


def plant_part(tmp_path: Path) -> Path:
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "part-00000.npz").symlink_to(_outside(tmp_path) / "part.npz")
    return tmp_path / "out" / "shards" / "part-00000.npz"


def plant_marker(tmp_path: Path) -> Path:
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "part-00001.done").symlink_to(_outside(tmp_path) / "precious.txt")
    return tmp_path / "out" / "shards" / "part-00001.done"


def plant_lock(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".batch.lock").symlink_to(_outside(tmp_path) / "lock")
    return tmp_path / "out" / ".batch.lock"


def plant_summary(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").symlink_to(_outside(tmp_path) / "precious.txt")
    return tmp_path / "out" / "summary.json"


PLANTED: dict[str, Callable[[Path], Path]] = {
    "shards dir": plant_shards,
    "part file": plant_part,
    "marker": plant_marker,
    "lock": plant_lock,
    "summary": plant_summary,
}


def elsewhere_tree(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp_path / "elsewhere").iterdir())}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("case", PLANTED)
def test_a_link_planted_in_the_output_is_refused_and_never_written_through(
    case: str, overwrite: bool, tmp_path: Path, good: Path
) -> None:
    """Defect class: planted links. A `shards` symbolic link planted in the output redirected the
    batch's writes outside it (exit 0, with or without overwrite); a link where the batch writes is
    refused, one line naming it, exit 2, and nothing is written where it points."""
    planted = PLANTED[case](tmp_path)
    before = elsewhere_tree(tmp_path)
    flags = ["--overwrite"] if overwrite else []
    worker = frugal("batch-worker", "--config", str(good), *flags)
    assert worker.returncode == 2, worker.stderr[-2000:]
    last = worker.stderr.strip().splitlines()[-1]
    assert last.startswith(f"frugal batch-worker: error: {planted} is a symbolic link"), last
    assert elsewhere_tree(tmp_path) == before and planted.is_symlink()
    aggregated = frugal("batch-aggregate", "--config", str(good), *flags)
    assert aggregated.returncode == 2, aggregated.stderr[-2000:]
    assert f"{planted} is a symbolic link" in aggregated.stderr.strip().splitlines()[-1]
    assert elsewhere_tree(tmp_path) == before and planted.is_symlink()
    assert not (tmp_path / "out" / "predictions.npz").exists()


def test_a_shards_link_planted_after_a_run_is_refused_by_overwrite(tmp_path: Path, good: Path) -> None:
    """Defect class: planted links. A finished output whose `shards` is then replaced by a link: the
    overwrite (which removes the old run) neither removes nor writes anything where the link points."""
    assert frugal("batch-worker", "--config", str(good)).returncode == 0
    assert frugal("batch-aggregate", "--config", str(good)).returncode == 0
    shards = tmp_path / "out" / "shards"
    shards.rename(tmp_path / "old-shards")
    shards.symlink_to(_outside(tmp_path), target_is_directory=True)
    (tmp_path / "elsewhere" / "part-00000.done").write_text("{}")  # what a stale-marker sweep would take
    before = elsewhere_tree(tmp_path)
    done = frugal("batch-worker", "--config", str(good), "--overwrite")
    assert done.returncode == 2 and f"{shards} is a symbolic link" in done.stderr, done.stderr[-2000:]
    assert elsewhere_tree(tmp_path) == before
    assert (tmp_path / "out" / "predictions.npz").is_file()  # the refusal came before the overwrite


def test_a_clean_output_still_runs_under_the_memory_limit(tmp_path: Path, good: Path) -> None:
    """The limit the bombs run under is no excuse: a real batch passes within it."""
    assert frugal("batch-worker", "--config", str(good)).returncode == 0
    done = frugal("batch-aggregate", "--config", str(good))
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == [
        ".batch.lock",
        "predictions.npz",
        "shards",
        "summary.json",
    ]
