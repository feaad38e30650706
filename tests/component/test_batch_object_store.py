"""Batch inference with its input and output in an S3 bucket, through the commands a Kubernetes Indexed
Job's pods run (`python -m frugal.serving.batch.worker_command`, then the aggregator), each its own
process with a pod's environment (``FSSPEC_S3`` for the connection, ``AWS_*`` for the keys).

What is compared is what the batch writes: the bucket's predictions against the same batch run on
local files, the shard markers' bytes before and after a worker is run again, the objects under the
output prefix after a refusal. Nothing is mocked: ``s3_server`` is a real S3 gateway.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from compression_support import compressed_digits
from s3_harness import REGION, S3Server
from sklearn.datasets import load_digits
from test_object_store_artifacts import environment

from frugal.serving.batch import inputs, output_dir
from frugal.serving.batch.engine import BatchConfig, aggregate, run_worker
from frugal.serving.server.artifacts import load_manifest
from frugal.storage import object_store
from frugal.storage.object_store import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ObjectStore

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "int8-dynamic"  # dynamic quantization: equal predictions need equal batches
# The digits cut into four input files: three parquet, one npz, read in name order.
CUTS = {"a.parquet": (0, 500), "b.npz": (500, 900), "c.parquet": (900, 1400), "d.parquet": (1400, 1797)}
SHARDS = 8  # 500 → 2 shards of 256, 400 → 2, 500 → 2, 397 → 2
QUIET = "--log-level=WARNING"  # no INFO lines (the model verified, the keys found): stderr is the error alone


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compressed_digits(tmp_path_factory.mktemp("artifacts") / "digits")


@pytest.fixture(scope="module")
def admin(s3_server: S3Server) -> s3fs.S3FileSystem:
    return s3_server.filesystem("admin")


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, admin: s3fs.S3FileSystem) -> Iterator[str]:
    name = s3_server.make_bucket(f"frugal-batch-{uuid.uuid4().hex[:12]}")
    yield name
    admin.rm(name, recursive=True)


def _file_bytes(name: str, rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    if name.endswith(".npz"):
        np.savez(buffer, input=rows, labels=np.zeros(len(rows), np.int64))
    else:
        pq.write_table(
            pa.table(
                {"id": np.arange(len(rows)), "input": pa.array(list(rows), type=pa.list_(pa.float32()))}
            ),
            buffer,
        )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(bucket: str, admin: s3fs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The same four files under a bucket's prefix and in a local directory: (prefix URI, directory).
    The bucket also holds what a batch ignores: a hidden object, a text object, a sub-prefix."""
    digits = (load_digits().data / 16.0).astype(np.float32)
    local = tmp_path_factory.mktemp("data")
    for name, (start, stop) in CUTS.items():
        content = _file_bytes(name, digits[start:stop])
        (local / name).write_bytes(content)
        admin.pipe_file(f"{bucket}/input/{name}", content)
    admin.pipe_file(f"{bucket}/input/.hidden.parquet", b"not read")
    admin.pipe_file(f"{bucket}/input/README.txt", b"not data")
    admin.pipe_file(f"{bucket}/input/deeper/z.npz", b"not read either")
    return f"s3://{bucket}/input", local


def batch(input_uri: str, output: str, artifacts: str, **fields: Any) -> BatchConfig:
    values = {"input": input_uri, "output": output, "artifacts": artifacts, "variant": VARIANT}
    return BatchConfig.model_validate(values | {"batchSize": 64, "rowsPerShard": 256, **fields})


def pod_env(server: S3Server, config: BatchConfig, **overrides: str) -> dict[str, str]:
    """A worker pod's environment: the config as the operator passes it, the store's settings and keys."""
    config_json = config.model_dump_json(by_alias=True, exclude_none=True)
    return {**environment(server), "FRUGAL_BATCH_CONFIG": config_json, **overrides}


def command(env: dict[str, str], module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"frugal.serving.batch.{module}", *args],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def worker(env: dict[str, str], index: int, count: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return finish(command(env, "worker_command", "--index", str(index), "--count", str(count), *extra))


def workers(env: dict[str, str], count: int) -> list[subprocess.CompletedProcess[str]]:
    """`count` workers at once, as an Indexed Job's pods run."""
    started = [command(env, "worker_command", "--index", str(i), "--count", str(count)) for i in range(count)]
    return [finish(process) for process in started]


def aggregated(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return finish(command(env, "aggregate_command", *extra))


def computed(done: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(computed, done before) from the worker's last log line."""
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    words = last.split("shard(s), ")[1].split()
    return int(words[0]), int(last.split("), ")[-1].split()[0])


def bucket_run(
    server: S3Server, bucket: str, artifacts: Path, data: tuple[str, Path], name: str, **fields: Any
) -> tuple[str, str, dict[str, str]]:
    """A batch of the bucket's input into ``runs/<name>``: (output URI, its key prefix, a pod's env)."""
    output = f"s3://{bucket}/runs/{name}"
    return (
        output,
        output.removeprefix("s3://"),
        pod_env(server, batch(data[0], output, str(artifacts), **fields)),
    )


def predictions(admin: s3fs.S3FileSystem, prefix: str) -> np.ndarray:
    admin.invalidate_cache()  # the test's own listings are older than what the workers wrote
    with np.load(io.BytesIO(admin.cat_file(f"{prefix}/predictions.npz"))) as handle:
        assert handle.files == ["logits"]
        return handle["logits"]


def objects(admin: s3fs.S3FileSystem, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` (relative key: bytes), listed afresh."""
    admin.invalidate_cache()
    return {key.removeprefix(prefix + "/"): admin.cat_file(key) for key in admin.find(prefix)}


def keys(admin: s3fs.S3FileSystem, prefix: str) -> set[str]:
    return set(objects(admin, prefix))


def layout_keys(shards: int) -> set[str]:
    parts = {f"shards/part-{i:05d}{suffix}" for i in range(shards) for suffix in (".npz", ".done")}
    return parts | {"predictions.npz", "summary.json"}


@pytest.fixture(scope="module")
def local_predictions(
    artifacts: Path, data: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> np.ndarray:
    """The same batch with its input and output on this machine."""
    config = batch(str(data[1]), str(tmp_path_factory.mktemp("local") / "out"), str(artifacts))
    run_worker(config, 0, 1)
    aggregate(config)
    with np.load(Path(config.output) / "predictions.npz") as handle:
        return handle["logits"]


def test_two_workers_score_a_bucket_prefix_as_the_same_batch_on_local_files(
    s3_server: S3Server, admin: s3fs.S3FileSystem, bucket: str, artifacts: Path,
    data: tuple[str, Path], local_predictions: np.ndarray,
) -> None:  # fmt: skip
    output, prefix, env = bucket_run(s3_server, bucket, artifacts, data, "two")
    for done in workers(env, 2):
        assert computed(done) == (4, 0)
    summary = aggregated(env)
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["rows"] == 1797 and json.loads(summary.stdout)["workers"] == [0, 1]

    assert np.array_equal(predictions(admin, prefix), local_predictions)
    assert keys(admin, prefix) == layout_keys(SHARDS)  # no lock, no temporary object
    # A marker records the input object's size and LastModified (a HEAD's), and its name.
    marker = json.loads(admin.cat_file(f"{prefix}/shards/part-00002.done"))
    head = admin.info(f"{bucket}/input/b.npz", refresh=True)
    assert (marker["file"], marker["start"], marker["stop"]) == ("b.npz", 0, 256)
    assert marker["inputSize"] == head["size"]
    assert marker["inputMtimeNs"] == int(head["LastModified"].timestamp()) * 10**9

    # The operator reads progress with its own keys (not the environment's): the same functions.
    store = ObjectStore(
        endpoint=s3_server.endpoint_url, region=REGION, addressing_style="path",
        credentials={ACCESS_KEY_ID: s3_server.reader.access_key, SECRET_ACCESS_KEY: s3_server.reader.secret_key},
    )  # fmt: skip
    layout = output_dir.Layout(object_store.location(output, store))
    markers = output_dir.markers_in(layout)
    assert len(markers) == SHARDS and all(m is not None and m.rows > 0 for m in markers.values())
    assert sum(m.rows for m in markers.values() if m is not None) == 1797
    summary_read = output_dir.read_summary(layout)
    assert summary_read is not None and summary_read["rows"] == 1797
    assert output_dir.read_marker(layout.marker(7)) == markers[layout.marker(7)]
    specs = load_manifest(artifacts).variant(VARIANT).inputs
    files = [
        inputs.describe(path, specs) for path in inputs.input_files(object_store.location(data[0], store))
    ]
    assert [f.path.name for f in files] == list(CUTS) and len(inputs.plan(files, 256)) == SHARDS
    assert output_dir.read_summary(output_dir.Layout(object_store.location(f"{output}-none", store))) is None
    assert output_dir.markers_in(output_dir.Layout(object_store.location(f"{output}-none", store))) == {}


def test_a_worker_run_again_skips_its_finished_shards_and_redoes_one_cut_short(
    s3_server: S3Server, admin: s3fs.S3FileSystem, bucket: str, artifacts: Path, data: tuple[str, Path],
    local_predictions: np.ndarray,
) -> None:  # fmt: skip
    _, prefix, env = bucket_run(s3_server, bucket, artifacts, data, "resumed")
    assert computed(worker(env, 0, 2)) == (4, 0)
    before = objects(admin, prefix)
    assert computed(worker(env, 0, 2)) == (0, 4)  # every marker there: nothing recomputed
    assert objects(admin, prefix) == before

    # A worker killed between a part and its marker leaves the part alone: that shard is redone.
    admin.rm_file(f"{prefix}/shards/part-00002.done")
    assert computed(worker(env, 0, 2)) == (1, 3)
    after = objects(admin, prefix)
    assert after.keys() == before.keys()
    redone = "shards/part-00002"
    assert json.loads(after[f"{redone}.done"])["pid"] != json.loads(before[f"{redone}.done"])["pid"]
    # A shard's bytes are the same whoever computes them; every other object is as it was.
    assert after[f"{redone}.npz"] == before[f"{redone}.npz"]
    assert {k: v for k, v in after.items() if redone not in k} == {
        k: v for k, v in before.items() if redone not in k
    }

    assert computed(worker(env, 1, 2)) == (4, 0)
    assert aggregated(env).returncode == 0
    assert np.array_equal(predictions(admin, prefix), local_predictions)


def test_overwrite_replaces_a_finished_bucket_run_and_without_it_is_refused(
    s3_server: S3Server, admin: s3fs.S3FileSystem, bucket: str, artifacts: Path, data: tuple[str, Path],
    local_predictions: np.ndarray,
) -> None:  # fmt: skip
    output, prefix, env = bucket_run(s3_server, bucket, artifacts, data, "overwritten")
    assert all(computed(done) == (4, 0) for done in workers(env, 2))
    assert aggregated(env).returncode == 0
    admin.pipe_file(f"{prefix}/mine.txt", b"not the batch's")
    finished = objects(admin, prefix)

    for module, prog in (("worker_command", "batch-worker"), ("aggregate_command", "batch-aggregate")):
        refused = finish(command(env, module))
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1] == (
            f"frugal {prog}: error: output {output} already exists (it holds predictions.npz of a finished "
            "run): pass overwrite (--overwrite) or choose another output"
        )
    assert objects(admin, prefix) == finished

    overwrite = bucket_run(s3_server, bucket, artifacts, data, "overwritten", overwrite=True)[2]
    assert computed(worker(overwrite, 0, 2)) == (4, 0)  # the finished run's shards all went
    assert keys(admin, prefix) == {"mine.txt"} | {
        f"shards/part-0000{i}{s}" for i in (0, 2, 4, 6) for s in (".npz", ".done")
    }
    assert computed(worker(overwrite, 1, 2)) == (4, 0)  # nothing finished left: it just does its own
    done = aggregated(overwrite)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(predictions(admin, prefix), local_predictions)
    assert admin.cat_file(f"{prefix}/mine.txt") == b"not the batch's"


def assert_refused(done: subprocess.CompletedProcess[str], *mentions: str, secrets: tuple[str, ...]) -> str:
    """Exit 2, one line `frugal batch-worker: error: ...` naming each of `mentions`, no key anywhere."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugal batch-worker: error: "), done.stderr
    for text in mentions:
        assert text in lines[0], done.stderr
    for secret in secrets:
        assert secret not in done.stdout and secret not in done.stderr
    return lines[0]


def test_a_wrong_key_or_a_missing_bucket_is_refused_and_writes_nothing(
    s3_server: S3Server, admin: s3fs.S3FileSystem, bucket: str, artifacts: Path, data: tuple[str, Path]
) -> None:
    output = f"s3://{bucket}/runs/refused"
    wrong = "not-the-secret-" + uuid.uuid4().hex
    env = pod_env(s3_server, batch(data[0], output, str(artifacts)), **{SECRET_ACCESS_KEY: wrong})
    assert_refused(
        worker(env, 0, 1, QUIET), data[0], "PermissionError", secrets=(wrong, s3_server.admin.secret_key)
    )
    # The input readable, the output not: refused at the output's first object, nothing written.
    reader = {
        ACCESS_KEY_ID: s3_server.reader.access_key,
        SECRET_ACCESS_KEY: s3_server.reader.secret_key,
    }
    env = pod_env(s3_server, batch(data[0], output, str(artifacts)), **reader)
    assert_refused(
        worker(env, 0, 1, QUIET),
        f"{output}/shards/part-00000.npz: PermissionError",
        secrets=(s3_server.reader.secret_key,),
    )
    assert keys(admin, output.removeprefix("s3://")) == set()

    none = f"frugal-none-{uuid.uuid4().hex[:12]}"
    env = pod_env(s3_server, batch(f"s3://{none}/input", output, str(artifacts)))
    assert_refused(worker(env, 0, 1, QUIET), f"input s3://{none}/input does not exist", secrets=())
    env = pod_env(s3_server, batch(str(data[1]), f"s3://{none}/out", str(artifacts)))
    assert_refused(
        worker(env, 0, 1, QUIET), f"s3://{none}/out/", "FileNotFoundError", "no such bucket", secrets=()
    )


def test_a_missing_input_object_is_named(
    s3_server: S3Server, bucket: str, artifacts: Path, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/input/absent.parquet"
    env = pod_env(s3_server, batch(uri, str(tmp_path / "out"), str(artifacts)))
    assert_refused(worker(env, 0, 1, QUIET), f"input {uri} does not exist", secrets=())
    assert not (tmp_path / "out").exists()


def test_artifacts_input_and_output_all_in_the_bucket(
    s3_server: S3Server, admin: s3fs.S3FileSystem, bucket: str, artifacts: Path, data: tuple[str, Path],
    local_predictions: np.ndarray, tmp_path: Path,
) -> None:  # fmt: skip
    published = f"s3://{bucket}/digits/gen-1"
    store = ObjectStore(
        endpoint=s3_server.endpoint_url, region=REGION, addressing_style="path",
        credentials={ACCESS_KEY_ID: s3_server.admin.access_key, SECRET_ACCESS_KEY: s3_server.admin.secret_key},
    )  # fmt: skip
    object_store.publish(artifacts, object_store.location(published, store))
    output = f"s3://{bucket}/runs/all-bucket"
    config = batch(data[0], output, published, fetchDir=str(tmp_path / "fetched"))
    env = pod_env(s3_server, config)
    done = worker(env, 0, 1)
    assert computed(done) == (SHARDS, 0) and "fetched 1 file(s)" in done.stderr
    assert aggregated(env).returncode == 0
    assert np.array_equal(predictions(admin, output.removeprefix("s3://")), local_predictions)


def test_an_unreachable_store_is_a_crash_the_job_retries(artifacts: Path, tmp_path: Path) -> None:
    """Exit 1, not 2: nothing is wrong with the batch, so the Job's retry may succeed."""
    uri = "s3://frugal-unreachable/input"
    env = {
        "FSSPEC_S3": json.dumps(
            {"endpoint_url": "http://127.0.0.1:1", "config_kwargs": {"retries": {"max_attempts": 1}}}
        ),
        ACCESS_KEY_ID: "unreachable",
        SECRET_ACCESS_KEY: "unreachable-secret",
        "FRUGAL_BATCH_CONFIG": batch(uri, str(tmp_path / "out"), str(artifacts)).model_dump_json(
            by_alias=True
        ),
    }
    done = worker(env, 0, 1, QUIET)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"frugal batch-worker: {uri}: EndpointConnectionError"
