"""Batch inference on the digits MLP as `frugal compress` writes it: real ONNX Runtime, real worker
processes (`frugal batch-worker`, as a Kubernetes Indexed Job's pods run it), real SIGKILLs.

What is compared is the bytes the batch writes: predictions against a plain single-process ONNX
Runtime loop over the same rows, and the shards' completion markers (which process computed which
shard, and when) before and after a worker is killed and the run started again.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from compression_support import compressed_digits
from sklearn.datasets import load_digits

from frugal.serving.batch.engine import BatchConfig, BatchError, aggregate, run_worker
from frugal.serving.batch.local_runner import run_local

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "int8-dynamic"  # dynamic quantization: a row's output depends on its batch's rows (see infer)
BATCH = 64
COPIES, SHARDS = 20, 1124  # the many_shards input: 20 × 1,797 rows in shards of 32


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits MLP compressed by the project's own `frugal compress` (fp32 and int8-dynamic)."""
    return compressed_digits(tmp_path_factory.mktemp("artifacts") / "digits")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """scikit-learn's digits as the zoo model reads them: 64 pixel intensities scaled to [0, 1], FP32."""
    return (load_digits().data / 16.0).astype(np.float32)


def config(tmp: Path, artifacts: Path, data: Path, out: str = "out", **fields: Any) -> BatchConfig:
    values = {"input": str(data), "output": str(tmp / out), "artifacts": str(artifacts), "variant": VARIANT}
    values |= {"batchSize": BATCH, "rowsPerShard": 256, **fields}
    return BatchConfig.model_validate(values)


def config_file(path: Path, batch: BatchConfig) -> Path:
    path.write_text(batch.model_dump_json(by_alias=True, exclude_none=True))
    return path


def cli(command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`frugal <command> ARGS` through the console entry point's delegation, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "frugal.operator.main", command, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def plain_loop(
    artifacts: Path, variant: str, x: np.ndarray, cuts: Sequence[int], batch: int = BATCH
) -> np.ndarray:
    """One ONNX Runtime session in this process, `batch` rows at a time from each cut."""
    session = ort.InferenceSession(
        str(artifacts / f"variants/{variant}/model.onnx"), providers=["CPUExecutionProvider"]
    )
    bounds = [*cuts, len(x)]
    pieces = [
        session.run(["logits"], {"input": x[s : min(s + batch, stop)]})[0]
        for start, stop in itertools.pairwise(bounds)
        for s in range(start, stop, batch)
    ]
    return np.concatenate(pieces)


def predictions(batch: BatchConfig) -> np.ndarray:
    with np.load(Path(batch.output) / "predictions.npz") as handle:
        assert handle.files == ["logits"]
        return handle["logits"]


def markers(batch: BatchConfig) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((Path(batch.output) / "shards").glob("*.done"))}


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` with its bytes and mtime, to show a refusal touched nothing."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------ equality


def test_two_workers_give_the_one_worker_result_and_the_plain_loops(
    tmp_path: Path, artifacts: Path, digits: np.ndarray
) -> None:
    data = tmp_path / "digits.npz"
    np.savez(data, input=digits, labels=np.arange(len(digits)))
    one = config(tmp_path, artifacts, data, "one", costPerHour=0.10, maxWatts=35, pricePerKWh=0.15)
    two = config(tmp_path, artifacts, data, "two")
    summary_one = run_local(one, workers=1, progress=False)
    summary_two = run_local(two, workers=2, progress=False)

    assert np.array_equal(predictions(one), predictions(two))
    # Shards of 256 rows batched 64 at a time: the same batches as a plain loop 64 rows at a time.
    assert np.array_equal(predictions(one), plain_loop(artifacts, VARIANT, digits, [0]))
    assert predictions(one).shape == (1797, 10)
    assert (predictions(one).argmax(1) == load_digits().target).mean() > 0.95

    assert (summary_one.rows, summary_one.shards, summary_one.workers, summary_one.processes) == (
        1797,
        8,
        [0],
        1,
    )
    assert (summary_two.rows, summary_two.shards, summary_two.workers, summary_two.processes) == (
        1797,
        8,
        [0, 1],
        2,
    )
    assert {m["worker"] for name, m in markers(two).items() if int(name[5:10]) % 2} == {1}
    # Priced like a replica at full load: busy hours × costPerHour + maxWatts × busy seconds at the kWh price.
    busy = summary_one.busy_seconds
    assert busy == pytest.approx(sum(m["seconds"] for m in markers(one).values()))
    assert summary_one.energy_joules == pytest.approx(35 * busy)
    assert summary_one.cost_usd == pytest.approx(busy / 3600 * 0.10 + 35 * busy / 3.6e6 * 0.15)
    assert summary_one.cost_per_million_rows_usd == pytest.approx(summary_one.cost_usd / 1797 * 1e6)
    assert summary_two.cost_usd is None and summary_two.energy_joules is None
    written = json.loads((Path(one.output) / "summary.json").read_text())
    assert written["rows"] == 1797 and written["rowsPerSecond"] == pytest.approx(summary_one.rows_per_second)


def test_fp32_matches_one_whole_batch_closely_and_int8_only_at_equal_batches(
    tmp_path: Path, artifacts: Path, digits: np.ndarray
) -> None:
    """Why the engine fixes batch boundaries: int8-dynamic quantizes each batch with its own scale."""
    data = tmp_path / "digits.npz"
    np.savez(data, input=digits)
    fp32 = config(tmp_path, artifacts, data, "fp32", variant="fp32")
    run_worker(fp32, 0, 1)
    aggregate(fp32)
    assert np.allclose(
        predictions(fp32), plain_loop(artifacts, "fp32", digits, [0], batch=len(digits)), atol=1e-5
    )
    int8 = config(tmp_path, artifacts, data, "int8")
    run_worker(int8, 0, 1)
    aggregate(int8)
    whole = plain_loop(artifacts, VARIANT, digits, [0], batch=len(digits))
    assert not np.array_equal(predictions(int8), whole)


def test_a_directory_of_two_npz_and_a_parquet_is_read_in_name_order(
    tmp_path: Path, artifacts: Path, digits: np.ndarray
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    a, b, c = digits[:500], digits[500:1200], digits[1200:]
    pq.write_table(  # written first, read second: the order is the names'
        pa.table({"id": np.arange(len(b)), "input": pa.array(list(b), type=pa.list_(pa.float32()))}),
        folder / "b.parquet",
    )
    np.savez(folder / "c.npz", input=c, labels=np.zeros(len(c), np.int64))
    np.savez(folder / "a.npz", input=a)
    (folder / "README.txt").write_text("not data")
    batch = config(tmp_path, artifacts, folder)
    result = run_worker(batch, 0, 1)
    summary = aggregate(batch)

    cuts = [0, 256, 500, 756, 1012, 1200, 1456, 1712]  # every file cut in 256-row shards
    assert (result.shards, summary.rows) == (len(cuts), 1797)
    assert np.array_equal(predictions(batch), plain_loop(artifacts, VARIANT, digits, cuts))
    assert [(m["file"], m["start"], m["stop"]) for m in markers(batch).values()] == [
        ("a.npz", 0, 256), ("a.npz", 256, 500), ("b.parquet", 0, 256), ("b.parquet", 256, 512),
        ("b.parquet", 512, 700), ("c.npz", 0, 256), ("c.npz", 256, 512), ("c.npz", 512, 597),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ crashes


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def many_shards(tmp_path: Path, digits: np.ndarray) -> Path:
    """Twenty copies of digits (35,940 rows): at 32 rows a shard, 1,124 shards, a second or two's work
    (mostly syncing each shard's outputs to disk), so a worker can be killed in the middle."""
    data = tmp_path / "many.npz"
    np.savez(data, input=np.tile(digits, (COPIES, 1)))
    return data


@pytest.fixture
def many(digits: np.ndarray) -> np.ndarray:
    return np.tile(digits, (COPIES, 1))


def test_a_worker_killed_mid_run_resumes_without_redoing_finished_shards(
    tmp_path: Path, artifacts: Path, digits: np.ndarray, many_shards: Path, many: np.ndarray
) -> None:
    batch = config(tmp_path, artifacts, many_shards, rowsPerShard=32)
    shards = Path(batch.output) / "shards"
    worker = subprocess.Popen(
        [sys.executable, "-m", "frugal.operator.main", "batch-worker", "--config", str(config_file(tmp_path / "c.json", batch))],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: shards.is_dir() and len(list(shards.glob("*.done"))) >= 10)
        assert worker.poll() is None, "the worker finished before it could be killed"
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    before = markers(batch)
    before_bytes = {p.name: p.read_bytes() for p in shards.glob("*.done")}
    assert 10 <= len(before) < SHARDS
    assert {m["pid"] for m in before.values()} == {worker.pid}

    summary = run_local(batch, workers=2, progress=False)

    after = markers(batch)
    assert len(after) == summary.shards == SHARDS
    assert {name: (shards / name).read_bytes() for name in before} == before_bytes  # not recomputed
    redone = {name: m for name, m in after.items() if name not in before}
    assert redone and all(m["pid"] != worker.pid for m in redone.values())
    assert all(m["startedAt"] > max(b["finishedAt"] for b in before.values()) for m in redone.values())
    assert summary.processes == 3 and summary.rows == len(digits) * COPIES
    assert np.array_equal(
        predictions(batch), plain_loop(artifacts, VARIANT, many, list(range(0, len(many), 32)))
    )


def worker_pids(parent: int) -> dict[int, int]:
    """{worker index: pid} of the `frugal.serving.batch.worker_command` processes whose parent is `parent`."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and b"frugal.serving.batch.worker_command" in argv:
            found[int(argv[argv.index(b"--index") + 1])] = int(stat.parent.name)
    return found


def test_the_local_run_restarts_a_worker_that_dies(
    tmp_path: Path, artifacts: Path, digits: np.ndarray, many_shards: Path, many: np.ndarray
) -> None:
    batch = config(tmp_path, artifacts, many_shards, rowsPerShard=32)
    shards = Path(batch.output) / "shards"
    outcome: dict[str, Any] = {}

    def coordinate() -> None:
        try:
            outcome["summary"] = run_local(batch, workers=2, progress=False)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=coordinate)
    thread.start()
    try:
        # Worker 0 (even shards) has finished some: the other may have started sooner.
        wait_for(
            lambda: (
                len(worker_pids(os.getpid())) == 2 and len(list(shards.glob("part-????[02468].done"))) >= 5
            )
        )
        victim = worker_pids(os.getpid())[0]
        os.kill(victim, signal.SIGKILL)
    finally:
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.shards == SHARDS and summary.processes == 3 and summary.workers == [0, 1]
    by_worker0 = {m["pid"] for m in markers(batch).values() if m["worker"] == 0}
    assert victim in by_worker0 and len(by_worker0) == 2
    assert np.array_equal(
        predictions(batch), plain_loop(artifacts, VARIANT, many, list(range(0, len(many), 32)))
    )


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def finished(tmp_path: Path, artifacts: Path, digits: np.ndarray) -> Iterator[BatchConfig]:
    """An output holding a finished run, to show that refusals leave it as it was."""
    data = tmp_path / "good.npz"
    np.savez(data, input=digits)
    batch = config(tmp_path, artifacts, data, "finished")
    run_worker(batch, 0, 1)
    aggregate(batch)
    yield batch


def _unreadable(folder: Path) -> Path:
    (folder / "x.npz").write_bytes(b"this is not a zip archive")
    return folder / "x.npz"


def _parquet(folder: Path, column: pa.Array) -> Path:
    pq.write_table(pa.table({"input": column}), folder / "x.parquet")
    return folder / "x.parquet"


def _npz(folder: Path, **arrays: np.ndarray) -> Path:
    np.savez(folder / "x.npz", **arrays)
    return folder / "x.npz"


BAD_INPUTS = {
    "unreadable": (_unreadable, ["cannot read", "x.npz as .npz"]),
    "missing input": (lambda f: _npz(f, pixels=np.zeros((4, 64), np.float32)), ["x.npz", "no array named 'input'", "pixels"]),
    "wrong shape": (lambda f: _npz(f, input=np.zeros((4, 63), np.float32)), ["x.npz", "'input'", "[4, 63]", "FP32 [-1, 64]"]),
    "strings": (lambda f: _npz(f, input=np.full((4, 64), "a")), ["x.npz", "'input' is BYTES", "expects FP32"]),
    "float64": (lambda f: _npz(f, input=np.zeros((4, 64))), ["'input' is FP64", "expects FP32"]),
    "parquet of ints": (lambda f: _parquet(f, pa.array([[1] * 64] * 4)), ["x.parquet", "'input' is INT64"]),
    "parquet scalars": (lambda f: _parquet(f, pa.array([1.0] * 4, pa.float32())), ["x.parquet", "rank 1"]),
    "no such file": (lambda f: f / "nope.npz", ["nope.npz does not exist"]),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    case: str, tmp_path: Path, finished: BatchConfig
) -> None:
    make, mentions = BAD_INPUTS[case]
    folder = tmp_path / "bad"
    folder.mkdir()
    # Even with overwrite the finished output stays: the input is checked before anything is removed.
    batch = finished.model_copy(update={"input": str(make(folder)), "overwrite": True})
    untouched = tree(Path(batch.output))
    done = cli("batch-worker", "--config", str(config_file(tmp_path / "c.json", batch)))
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("frugal batch-worker: error: ") and "Traceback" not in done.stderr
    for mention in mentions:
        assert mention in last
    assert tree(Path(batch.output)) == untouched


@pytest.mark.parametrize(
    ("bad_row", "mentions"),
    [(np.zeros(63, np.float32), "rows of different lengths [63, 64]"), (None, "missing values (nulls)")],
)
def test_a_bad_row_stops_the_worker_at_its_shard(
    bad_row: np.ndarray | None, mentions: str, tmp_path: Path, artifacts: Path, digits: np.ndarray
) -> None:
    """What only the rows tell (a list column's lengths, nulls) shows when the shard is read: the
    shards before it are done and kept, nothing is aggregated."""
    rows: list[Any] = [*digits[:300], bad_row, *digits[301:400]]
    data = _parquet(tmp_path, pa.array(rows, type=pa.list_(pa.float32())))
    batch = config(tmp_path, artifacts, data)
    done = cli("batch-worker", "--config", str(config_file(tmp_path / "c.json", batch)))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"frugal batch-worker: error: {data}: column 'input' has") and mentions in last
    assert list(markers(batch)) == ["part-00000.done"]
    assert not (Path(batch.output) / "predictions.npz").exists()


def test_a_finished_output_is_refused_without_overwrite_and_replaced_with_it(
    tmp_path: Path, finished: BatchConfig
) -> None:
    output = Path(finished.output)
    (output / "mine.txt").write_text("not the batch's")
    untouched = tree(output)
    path = config_file(tmp_path / "c.json", finished)
    for command in ("batch-worker", "batch-aggregate"):
        refused = cli(command, "--config", str(path))
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1] == (
            f"frugal {command}: error: output {output} already exists (it holds predictions.npz of a finished "
            "run): pass overwrite (--overwrite) or choose another output"
        )
    assert tree(output) == untouched

    old = markers(finished)
    redone = cli("batch-worker", "--overwrite", env={"FRUGAL_BATCH_CONFIG": path.read_text()})
    assert redone.returncode == 0, redone.stderr
    assert not (output / "predictions.npz").exists() and not (output / "summary.json").exists()
    assert (output / "mine.txt").read_text() == "not the batch's"  # only what the batch wrote goes
    new = markers(finished)
    assert new.keys() == old.keys() and all(new[k]["pid"] != old[k]["pid"] for k in new)
    shard_lines = [line for line in redone.stderr.splitlines() if "rows/s" in line]
    assert len(shard_lines) == 8 and "part-00000 (1/8 of worker 0): 256 rows in" in shard_lines[0]
    aggregated = cli("batch-aggregate", "--config", str(path))
    assert aggregated.returncode == 0, aggregated.stderr
    assert json.loads(aggregated.stdout)["rows"] == 1797


def test_aggregating_an_unfinished_run_lists_the_missing_shards(
    tmp_path: Path, artifacts: Path, digits: np.ndarray
) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, input=digits)
    batch = config(tmp_path, artifacts, data)
    path = config_file(tmp_path / "c.json", batch)
    assert (
        cli(
            "batch-worker", "--config", str(path), "--count", "2", env={"JOB_COMPLETION_INDEX": "1"}
        ).returncode
        == 0
    )
    done = cli("batch-aggregate", "--config", str(path))
    assert done.returncode == 2
    assert (
        "4 of 8 shards are not done" in done.stderr
        and "part-00000, part-00002, part-00004, part-00006" in done.stderr
    )
    assert not (Path(batch.output) / "predictions.npz").exists()
    with pytest.raises(BatchError, match="4 of 8 shards"):
        aggregate(batch)


def test_shards_of_another_input_are_refused(tmp_path: Path, artifacts: Path, digits: np.ndarray) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, input=digits)
    batch = config(tmp_path, artifacts, data)
    run_worker(batch, 0, 2)
    np.savez(data, input=digits[::-1].copy())  # the same name and rows, other contents (mtime moves)
    os.utime(data, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(BatchError, match="shard\\(s\\) of another input or model"):
        run_worker(batch, 1, 2)
    run_worker(batch.model_copy(update={"overwrite": True}), 1, 2)  # removes the stale shards, does its own
    assert {m["worker"] for m in markers(batch).values()} == {1}
