"""Artifacts in an S3 bucket, end to end through the components' own commands: `frugal compress` reads
its model and data from the bucket and publishes the artifact there, the profiler measures it from the
bucket and PUTs its profile back, `frugal serve` fetches the variant and answers. Then the refusals:
a read-only or wrong key, a missing bucket, a corrupted object.

Nothing is mocked: ``s3_server`` is a real S3 gateway, and each command runs as its own process with
the environment a pod gets (``FSSPEC_S3`` for the connection, ``AWS_*`` for the keys).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import s3fs
from object_store_support import assert_refused, compress, run, run_profiler
from s3_harness import REGION, S3Server
from serving_support import infer_json, running_server, serve_command

from frugal.compression.source import SourceModel
from frugal.storage.object_store import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ObjectStore

HARDWARE = "test-cpu"


def environment(server: S3Server, identity: str = "admin", secret: str | None = None) -> dict[str, str]:
    """What a pod's container gets: the connection settings and one identity's keys."""
    keys = server.identities[identity]
    store = ObjectStore(endpoint=server.endpoint_url, region=REGION, addressing_style="path")
    return {
        **store.environment(),
        ACCESS_KEY_ID: keys.access_key,
        SECRET_ACCESS_KEY: keys.secret_key if secret is None else secret,
    }


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> Iterator[str]:
    name = s3_server.make_bucket(f"frugal-art-{uuid.uuid4().hex[:12]}")
    yield name
    s3_server.filesystem("admin").rm(name, recursive=True)


@pytest.fixture(scope="module")
def admin(s3_server: S3Server) -> s3fs.S3FileSystem:
    return s3_server.filesystem("admin")


@pytest.fixture(scope="module")
def digits_inputs(
    bucket: str, admin: s3fs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """The digits MLP as TorchScript and its held-out data, uploaded: (model URI, validation URI)."""
    import torch

    from frugal.compression.zoo import digits

    source: SourceModel = digits.load()
    assert source.module is not None and source.validation.labels is not None
    local = tmp_path_factory.mktemp("inputs")
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still what users hand us
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(source.module).save(str(local / "digits.ts"))
    np.savez(
        local / "validation.npz", input=source.validation.inputs["input"], labels=source.validation.labels
    )
    admin.put_file(str(local / "digits.ts"), f"{bucket}/inputs/digits.ts")
    admin.put_file(str(local / "validation.npz"), f"{bucket}/inputs/validation.npz")
    return f"s3://{bucket}/inputs/digits.ts", f"s3://{bucket}/inputs/validation.npz"


@pytest.fixture(scope="module")
def published(
    s3_server: S3Server, bucket: str, digits_inputs: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A generation compressed from the bucket's model and data straight into the bucket; its URI."""
    model, validation = digits_inputs
    uri = f"s3://{bucket}/digits/gen-1"
    cache = tmp_path_factory.mktemp("cache")
    done = run(
        {**environment(s3_server), "FRUGAL_CACHE_DIR": str(cache)},
        "frugal.compression.compress_command",
        "--quiet",
        "--model",
        model,
        "--validation",
        validation,
        "--quantization",
        "dynamic-int8",
        "--repeats",
        "1",
        "--out",
        uri,
    )
    assert done.returncode == 0, done.stderr
    return uri


def test_compress_publishes_every_file_the_manifest_lists(s3_server: S3Server, published: str) -> None:
    view = s3_server.filesystem("reader")
    prefix = published.removeprefix("s3://")
    manifest = json.loads(view.cat_file(f"{prefix}/manifest.json"))
    assert manifest["source"].startswith("s3://") and manifest["source"].endswith("/inputs/digits.ts")
    stored = {key.removeprefix(prefix + "/") for key in view.find(prefix)}
    assert set(manifest["files"]) | {"manifest.json"} == stored
    for name, entry in manifest["files"].items():
        assert view.info(f"{prefix}/{name}")["size"] == entry["sizeBytes"]
    assert {v["name"] for v in manifest["variants"]} >= {"fp32", "int8-dynamic"}


def test_profiling_reads_the_bucket_and_writes_the_profile_back(s3_server: S3Server, published: str) -> None:
    done = run_profiler(environment(s3_server), published, HARDWARE, repeats=2)
    assert done.returncode == 0, done.stderr
    assert "profiled 2 variant(s)" in done.stdout
    profile = json.loads(
        s3_server.filesystem("reader").cat_file(f"{published.removeprefix('s3://')}/profiles/{HARDWARE}.json")
    )
    assert {row["name"] for row in profile["variants"]} == {"fp32", "int8-dynamic"}


def test_a_read_only_identity_profiles_but_cannot_write_the_profile(
    s3_server: S3Server, published: str, admin: s3fs.S3FileSystem
) -> None:
    reader = s3_server.identities["reader"]
    done = run_profiler(environment(s3_server, "reader"), published, "read-only", repeats=1)
    assert done.returncode == 2, done.stderr
    assert f"error: {published}/profiles/read-only.json: PermissionError" in done.stderr
    assert "Traceback" not in done.stderr
    assert reader.secret_key not in done.stderr and reader.secret_key not in done.stdout
    assert not admin.exists(f"{published.removeprefix('s3://')}/profiles/read-only.json")


def test_serve_fetches_the_variant_and_answers_correctly(
    s3_server: S3Server, published: str, tmp_path: Path
) -> None:
    from frugal.compression.zoo import digits

    source = digits.load()
    x, y = source.validation.inputs["input"][:200], source.validation.labels
    assert y is not None
    fetch_dir = tmp_path / "fetched"
    env = environment(s3_server)
    with running_server(published, "int8-dynamic", "--fetch-dir", str(fetch_dir), env=env) as server:  # type: ignore[arg-type]
        reply = infer_json(server.url, "model", {"input": x.astype(np.float32)})
        assert reply.status == 200, reply.body
        logits = np.asarray(reply.json()["outputs"][0]["data"], dtype=np.float32).reshape(len(x), -1)
        assert float((logits.argmax(axis=1) == y[:200]).mean()) > 0.9
        assert "fetched 1 file(s)" in server.stderr() and "bytes from " + published in server.stderr()
    assert (fetch_dir / "manifest.json").is_file()
    assert not list(fetch_dir.rglob("*.part"))
    # A restart finds the copy whole and fetches nothing but the manifest.
    with running_server(published, "int8-dynamic", "--fetch-dir", str(fetch_dir), env=env) as again:  # type: ignore[arg-type]
        assert "fetched 0 file(s), 0 bytes" in again.stderr() and "1 already there" in again.stderr()


def test_a_read_only_identity_cannot_publish(
    s3_server: S3Server, bucket: str, admin: s3fs.S3FileSystem
) -> None:
    uri = f"s3://{bucket}/read-only/gen-1"
    reader = s3_server.identities["reader"]
    done = compress(environment(s3_server, "reader"), uri)
    assert_refused(done, "compress", uri, "PermissionError", secrets=(reader.secret_key,))
    assert not admin.exists(f"{bucket}/read-only/gen-1/manifest.json")


def test_a_wrong_key_is_refused_naming_the_uri(
    s3_server: S3Server, bucket: str, admin: s3fs.S3FileSystem
) -> None:
    uri = f"s3://{bucket}/wrong-key/gen-1"
    wrong = "not-the-secret-" + uuid.uuid4().hex
    done = compress(environment(s3_server, secret=wrong), uri)
    assert_refused(
        done, "compress", uri, "PermissionError", secrets=(wrong, s3_server.identities["admin"].secret_key)
    )
    assert not admin.exists(f"{bucket}/wrong-key/gen-1/manifest.json")


def test_a_missing_bucket_is_named(s3_server: S3Server) -> None:
    uri = f"s3://frugal-none-{uuid.uuid4().hex[:12]}/gen-1"
    done = compress(environment(s3_server), uri)
    assert_refused(done, "compress", uri, "FileNotFoundError", "no such bucket", secrets=())
    served = subprocess.run(
        serve_command(uri, "fp32"),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **environment(s3_server)},
        check=False,
    )
    assert served.returncode == 2, served.stderr
    assert uri in served.stderr and "FileNotFoundError" in served.stderr and "Traceback" not in served.stderr


def test_a_corrupted_object_is_refused_by_serve(
    s3_server: S3Server, published: str, admin: s3fs.S3FileSystem, tmp_path: Path
) -> None:
    prefix = published.removeprefix("s3://")
    copy = prefix.replace("gen-1", "gen-corrupt")
    for key in admin.find(prefix):
        admin.copy(key, key.replace(prefix, copy, 1))
    model = f"{copy}/variants/fp32/model.onnx"
    data = bytearray(admin.cat_file(model))
    data[-1] ^= 0xFF
    admin.pipe_file(model, bytes(data))
    done = subprocess.run(
        [*serve_command(f"s3://{copy}", "fp32"), "--fetch-dir", str(tmp_path / "fetched")],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **environment(s3_server)},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "sha256 of variants/fp32/model.onnx is" in done.stderr and "manifest says" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_batch_worker_scores_with_artifacts_from_the_bucket(
    s3_server: S3Server, published: str, tmp_path: Path
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = tmp_path / "digits.npz"
    np.savez(data, input=(digits.data / 16.0).astype(np.float32))
    config = tmp_path / "batch.json"
    config.write_text(
        json.dumps(
            {
                "input": str(data),
                "output": str(tmp_path / "out"),
                "artifacts": published,
                "fetchDir": str(tmp_path / "fetched"),
                "variant": "int8-dynamic",
                "rowsPerShard": 512,
            }
        )
    )
    env = environment(s3_server)
    worker = run(env, "frugal.serving.batch.worker_command", "--config", str(config))
    assert worker.returncode == 0, worker.stderr
    assert "fetched 1 file(s)" in worker.stderr and published in worker.stderr
    done = run(env, "frugal.serving.batch.aggregate_command", "--config", str(config))
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out" / "predictions.npz") as handle:
        logits = handle["output"]  # the TorchScript model names its output "output"
    assert (logits.argmax(1) == digits.target).mean() > 0.9
    missing = json.loads(config.read_text()) | {
        "artifacts": published + "-absent",
        "output": str(tmp_path / "o2"),
    }
    config.write_text(json.dumps(missing))
    refused = run(env, "frugal.serving.batch.worker_command", "--config", str(config))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "frugal batch-worker: error: artifacts: " + published + "-absent: manifest.json"
    ), refused.stderr


def test_an_unreachable_store_is_a_failed_run_not_bad_input(tmp_path: Path) -> None:
    """Exit 1 (the Job retries), still one line naming the URI and the error's class."""
    env = {
        "FSSPEC_S3": json.dumps(
            {"endpoint_url": "http://127.0.0.1:1", "config_kwargs": {"retries": {"max_attempts": 1}}}
        ),
        ACCESS_KEY_ID: "unreachable",
        SECRET_ACCESS_KEY: "unreachable-secret",
    }
    uri = "s3://frugal-unreachable/gen-1"
    done = compress(env, uri)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"frugal compress: error: {uri}/manifest.json: EndpointConnectionError"
    served = subprocess.run(
        [*serve_command(uri, "fp32"), "--fetch-dir", str(tmp_path / "f")],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert served.returncode == 1, served.stderr
    assert (
        served.stderr.strip().splitlines()[-1]
        == f"frugal serve: {uri}/manifest.json: EndpointConnectionError"
    )
    fetched = run(
        env,
        "frugal.compression.compress_command",
        "--quiet",
        "--model",
        uri + "/model.onnx",
        "--out",
        str(tmp_path / "a"),
    )
    assert fetched.returncode == 1 and "EndpointConnectionError" in fetched.stderr, fetched.stderr


def test_a_missing_input_object_names_the_field(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/inputs/absent.onnx"
    done = run(
        environment(s3_server),
        "frugal.compression.compress_command",
        "--quiet",
        "--model",
        uri,
        "--out",
        str(tmp_path / "a"),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"frugal compress: error: model.uri: cannot fetch {uri} (FileNotFoundError")
    assert not (tmp_path / "a").exists()
