"""Artifacts in Google Cloud Storage (gs://) and Azure Blob Storage (az://), end to end through the
components' own commands, each run as its own process with the environment a pod gets
(:meth:`StoreAccess.env`, its Secret references resolved): `frugal compress` publishes the artifact
(``manifest.json`` last), the profiler measures it from the store and writes its profile back, `frugal
serve` fetches the variant, verifies it against the manifest and answers.

Nothing is mocked: the stores are real emulators on loopback. fake-gcs-server (``tests/gcs_harness.py``)
checks no credentials at all, so the GCS processes reach it anonymously (gcsfs ``token="anon"`` added to
``FSSPEC_GCS``) and no test here can show a GCS key refused or the mounted key file used; what it does
check is that a bucket exists, and a missing one is refused. Azurite (``tests/azure_harness.py``) checks
the Shared Key signature of every request, so a wrong account key is refused as Azure refuses it; its
processes trust Azurite's self-signed certificate through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure_harness import ACCOUNT, running_azurite
from gcs_harness import PROJECT, running_gcs_server
from object_store_support import assert_refused, compress, run_profiler
from serving_support import infer_json, running_server, serve_command

from frugal.operator.manifests.storage import StoreAccess
from frugal.storage.object_store import AZURE_ACCOUNT_KEY, FSSPEC_ENV, ObjectStore

HARDWARE = "test-cpu"
SECRET_NAME = "store-keys"


@dataclass(frozen=True)
class Store:
    """One provider's emulator as the tests see it: its scheme, a bucket, the environment a pod gets,
    the keys that must never be printed, and an admin view of the bucket."""

    scheme: str
    bucket: str
    env: dict[str, str]
    secrets: tuple[str, ...]
    admin: Any  # an fsspec filesystem with full access

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"


def pod_environment(access: StoreAccess, secret: Mapping[str, str]) -> dict[str, str]:
    """`access.env()` as a container sees it: values, and Secret references resolved against `secret`
    (an optional key the Secret lacks is left out, a required one must be there)."""
    env: dict[str, str] = {}
    for entry in access.env():
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME
        if ref["key"] in secret:
            env[entry["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional"), f"the Secret lacks the required key {ref['key']}"
    return env


@pytest.fixture(scope="module", params=["gs", "az"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    workdir = tmp_path_factory.mktemp(f"{request.param}-server")
    bucket = f"frugal-art-{uuid.uuid4().hex[:12]}"
    if request.param == "gs":
        with running_gcs_server(workdir) as gcs:
            access = StoreAccess(None, ObjectStore(endpoint=gcs.endpoint_url, project=PROJECT), ("gcs",))
            env = pod_environment(access, {})
            settings = json.loads(env[FSSPEC_ENV["gcs"]])
            assert settings == {"endpoint_url": gcs.endpoint_url, "project": PROJECT}
            env[FSSPEC_ENV["gcs"]] = json.dumps({**settings, "token": "anon"})  # no credentials checked
            yield Store("gs", gcs.make_bucket(bucket), env, (), gcs.filesystem())
        return
    with running_azurite(workdir) as azurite:
        settings = ObjectStore(endpoint=azurite.endpoint, account_name=ACCOUNT)
        access = StoreAccess(SECRET_NAME, settings, ("azure",))
        env = {
            **pod_environment(access, {AZURE_ACCOUNT_KEY: azurite.account_key}),
            **azurite.client_environment(),
        }
        yield Store("az", azurite.make_container(bucket), env, (azurite.account_key,), azurite.filesystem())


@pytest.fixture(scope="module")
def published(store: Store) -> str:
    uri = store.uri("digits/gen-1")
    done = compress(store.env, uri)
    assert done.returncode == 0, done.stderr
    return uri


def test_compress_publishes_every_file_the_manifest_lists_and_the_manifest_last(
    store: Store, published: str
) -> None:
    prefix = published.split("://", 1)[1]
    manifest = json.loads(store.admin.cat_file(f"{prefix}/manifest.json"))
    stored = {key.removeprefix(prefix + "/"): store.admin.info(key) for key in store.admin.find(prefix)}
    assert set(manifest["files"]) | {"manifest.json"} == set(stored)
    for name, entry in manifest["files"].items():
        assert stored[name]["size"] == entry["sizeBytes"]
    written = {name: modified(info) for name, info in stored.items()}
    assert written["manifest.json"] == max(written.values())
    assert {v["name"] for v in manifest["variants"]} >= {"fp32", "int8-dynamic"}


def modified(info: Mapping[str, Any]) -> str:
    """When an object was written, as the store reports it (gcsfs: ``updated``; adlfs: ``last_modified``)."""
    stamp = info.get("updated") or info.get("last_modified")
    assert stamp is not None, info
    return stamp.isoformat() if hasattr(stamp, "isoformat") else str(stamp)


def test_profiling_reads_the_store_and_writes_the_profile_back(store: Store, published: str) -> None:
    done = run_profiler(store.env, published, HARDWARE, repeats=2)
    assert done.returncode == 0, done.stderr
    assert "profiled 2 variant(s)" in done.stdout
    prefix = published.split("://", 1)[1]
    profile = json.loads(store.admin.cat_file(f"{prefix}/profiles/{HARDWARE}.json"))
    assert {row["name"] for row in profile["variants"]} == {"fp32", "int8-dynamic"}


def test_serve_fetches_verifies_and_answers(store: Store, published: str, tmp_path: Path) -> None:
    from frugal.compression.zoo import digits

    source = digits.load()
    x, y = source.validation.inputs["input"][:200], source.validation.labels
    assert y is not None
    fetch_dir = tmp_path / "fetched"
    with running_server(published, "int8-dynamic", "--fetch-dir", str(fetch_dir), env=store.env) as server:  # type: ignore[arg-type]
        reply = infer_json(server.url, "model", {"input": x.astype(np.float32)})
        assert reply.status == 200, reply.body
        logits = np.asarray(reply.json()["outputs"][0]["data"], dtype=np.float32).reshape(len(x), -1)
        assert float((logits.argmax(axis=1) == y[:200]).mean()) > 0.9
        assert "fetched 1 file(s)" in server.stderr() and "bytes from " + published in server.stderr()
    assert (fetch_dir / "manifest.json").is_file() and not list(fetch_dir.rglob("*.part"))


def test_a_missing_bucket_is_refused_naming_it(store: Store, tmp_path: Path) -> None:
    uri = f"{store.scheme}://frugal-none-{uuid.uuid4().hex[:12]}/gen-1"
    done = compress(store.env, uri)
    assert_refused(done, "compress", uri, "FileNotFoundError", "no such bucket", secrets=store.secrets)
    served = subprocess.run(
        [*serve_command(uri, "fp32"), "--fetch-dir", str(tmp_path / "f")],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **store.env},
        check=False,
    )
    assert served.returncode == 2, served.stderr
    assert uri in served.stderr and "FileNotFoundError" in served.stderr and "Traceback" not in served.stderr


@pytest.mark.parametrize("store", ["az"], indirect=True)  # fake-gcs-server checks no credentials
@pytest.mark.parametrize(
    ("wrong", "refusal"),
    [
        (base64.b64encode(secrets.token_bytes(64)).decode(), "PermissionError (HttpResponseError)"),
        ("not base64 " + secrets.token_hex(8), "PermissionError (AzureSigningError)"),
    ],
    ids=["refused-by-the-store", "not-a-key"],
)
def test_a_wrong_azure_key_is_refused_naming_the_uri_and_nothing_is_written(
    store: Store, wrong: str, refusal: str
) -> None:
    uri = store.uri(f"wrong-key-{uuid.uuid4().hex[:8]}/gen-1")
    done = compress({**store.env, AZURE_ACCOUNT_KEY: wrong}, uri)
    assert_refused(done, "compress", uri, refusal, secrets=(wrong, *store.secrets))
    assert not store.admin.find(uri.split("://", 1)[1])
