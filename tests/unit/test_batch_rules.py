"""The batch engine's pure parts: the config, the shard plan, the checks' messages, the pricing,
reading Arrow list columns, and where a worker's index comes from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from frugal.serving.batch.engine import BatchConfig, BatchError, config_from, parse_config, price
from frugal.serving.batch.inputs import FileInfo, Shard, check_column, local_path, parquet_rows, plan
from frugal.serving.batch.worker_command import worker_index
from frugal.serving.server.artifacts import TensorSpec

MINIMAL = '{"input": "d.npz", "output": "out", "artifacts": "art", "variant": "fp32"}'
PIXELS = TensorSpec(name="input", datatype="FP32", shape=(-1, 64))


def test_the_config_has_camel_case_fields_and_defaults() -> None:
    config = parse_config(MINIMAL, "c.json")
    assert (config.batch_size, config.rows_per_shard, config.overwrite) == (64, 1024, False)
    assert config.execution_provider == "CPUExecutionProvider" and config.intra_op_threads is None
    full = parse_config(
        '{"input": "d", "output": "o", "artifacts": "a", "variant": "v", "batchSize": 8, "rowsPerShard": 100,'
        '"costPerHour": "0.10", "idleWatts": 10, "maxWatts": 35, "pricePerKWh": 0.15, "intraOpThreads": 2}',
        "c.json",
    )
    assert (full.batch_size, full.rows_per_shard, full.cost_per_hour, full.price_per_kwh) == (
        8,
        100,
        0.1,
        0.15,
    )
    assert BatchConfig.model_validate(full.model_dump(by_alias=True)) == full


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ('{"input": "d"}', "output: Field required"),
        (MINIMAL[:-1] + ', "batchSize": 0}', "batchSize: Input should be greater than or equal to 1"),
        (MINIMAL[:-1] + ', "rowsPerShard": "many"}', "rowsPerShard: Input should be a valid integer"),
        (MINIMAL[:-1] + ', "workers": 2}', "workers: Extra inputs are not permitted"),
        ("{not json", "config c.json is invalid"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_field(text: str, mentions: str) -> None:
    with pytest.raises(BatchError) as caught:
        parse_config(text, "c.json")
    assert mentions in str(caught.value) and "\n" not in str(caught.value)


def test_the_config_comes_from_the_environment_when_no_file_is_given() -> None:
    assert config_from(None, {"FRUGAL_BATCH_CONFIG": MINIMAL}).variant == "fp32"
    with pytest.raises(BatchError, match="pass --config FILE or set FRUGAL_BATCH_CONFIG"):
        config_from(None, {})


def test_the_plan_cuts_every_file_in_input_order() -> None:
    files = [FileInfo(Path("a.npz"), 500), FileInfo(Path("b.npz"), 0), FileInfo(Path("c.parquet"), 256)]
    assert plan(files, 256) == [
        Shard(0, Path("a.npz"), 0, 256),
        Shard(1, Path("a.npz"), 256, 500),
        Shard(2, Path("c.parquet"), 0, 256),
    ]
    assert [s.name for s in plan(files, 1000)] == ["part-00000", "part-00001"]
    assert sum(s.rows for s in plan(files, 7)) == 756


@pytest.mark.parametrize(
    ("shape", "dtype", "mentions"),
    [
        ((10, 63), np.float32, "has shape [10, 63], the model expects FP32 [-1, 64] (dim 1 must be 64)"),
        ((10,), np.float32, "has shape [10] (rank 1), the model expects FP32 [-1, 64] (rank 2"),
        ((10, 64), np.float64, "is FP64 (float64), the model expects FP32"),
        ((10, 64), np.dtype("<U1"), "is BYTES (<U1), the model expects FP32"),
        ((10, 64), np.dtype("complex64"), "is of a type with no tensor datatype (complex64)"),
    ],
)
def test_a_column_that_does_not_fit_names_file_input_and_expectation(
    shape: tuple[int, ...], dtype: np.dtype, mentions: str
) -> None:
    with pytest.raises(BatchError) as caught:
        check_column(Path("d.npz"), PIXELS, shape, np.dtype(dtype))
    assert str(caught.value).startswith("d.npz: input 'input' ") and mentions in str(caught.value)


def test_a_fitting_column_passes_and_unknown_dimensions_wait_for_the_rows() -> None:
    check_column(Path("d.npz"), PIXELS, (0, 64), np.dtype(np.float32))
    check_column(Path("d.parquet"), PIXELS, (5, None), np.dtype(np.float32))


def test_price_is_busy_time_at_full_load() -> None:
    config = parse_config(MINIMAL, "c").model_copy(update={"cost_per_hour": 0.36, "max_watts": 100.0})
    assert price(3600.0, config) == (pytest.approx(0.36), pytest.approx(360_000.0))
    priced = config.model_copy(update={"price_per_kwh": 0.5})
    assert price(36.0, priced) == (pytest.approx(0.0036 + 0.0005), pytest.approx(3600.0))
    assert price(10.0, parse_config(MINIMAL, "c")) == (None, None)


def test_arrow_list_columns_become_dimensions() -> None:
    fixed = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], type=pa.list_(pa.float32(), 2))
    assert parquet_rows(fixed.slice(1, 2), Path("d"), "x").tolist() == [[3.0, 4.0], [5.0, 6.0]]
    nested = pa.chunked_array([pa.array([[[1, 2], [3, 4]]]), pa.array([[[5, 6], [7, 8]]])])
    rows = parquet_rows(nested, Path("d"), "x")
    assert rows.shape == (2, 2, 2) and rows.dtype == np.int64
    assert parquet_rows(pa.array([1.5, 2.5]), Path("d"), "x").tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    ("column", "mentions"),
    [
        (pa.array([[1.0, 2.0], [3.0]]), "d.parquet: column 'x' has rows of different lengths [1, 2]"),
        (pa.array([[1.0], None]), "d.parquet: column 'x' has missing values"),
        (pa.array([[1.0], [None]]), "d.parquet: column 'x' has missing values"),
    ],
)
def test_ragged_or_missing_rows_are_refused(column: pa.Array, mentions: str) -> None:
    with pytest.raises(BatchError, match=mentions.replace("[", r"\[").replace("]", r"\]")):
        parquet_rows(column, Path("d.parquet"), "x")


def test_the_worker_index_is_the_flag_else_the_indexed_jobs_else_0() -> None:
    assert worker_index(3, {"JOB_COMPLETION_INDEX": "1"}) == 3
    assert worker_index(None, {"JOB_COMPLETION_INDEX": "1"}) == 1
    assert worker_index(None, {}) == 0
    with pytest.raises(BatchError, match="JOB_COMPLETION_INDEX='x' is not a worker index"):
        worker_index(None, {"JOB_COMPLETION_INDEX": "x"})


def test_locations_are_paths_file_or_pvc_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_path("/data/in.npz", "input") == Path("/data/in.npz")
    assert local_path("file:///data/in.npz", "input") == Path("/data/in.npz")
    monkeypatch.delenv("FRUGAL_PVC_ROOT", raising=False)
    with pytest.raises(BatchError, match="mount it and set FRUGAL_PVC_ROOT"):
        local_path("pvc://claim/in.npz", "input")
    monkeypatch.setenv("FRUGAL_PVC_ROOT", "/claims")
    assert local_path("pvc://claim/dir/in.npz", "input") == Path("/claims/claim/dir/in.npz")
    with pytest.raises(BatchError, match=r"input: s3://b/k: a batch reads local paths, file:// or pvc://"):
        local_path("s3://b/k", "input")
