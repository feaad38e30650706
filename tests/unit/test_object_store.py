"""frugal.storage.object_store's pure parts, and the fetch decisions built on it: settings without keys,
locations by scheme, publish order (manifest last, none left after a failure), local downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from upath import UPath

from frugal.schema import artifact_format as schema
from frugal.serving.server.artifacts import FileStat, VerifyCache
from frugal.serving.server.fetch import (
    default_fetch_dir,
    fetch_artifacts,
    up_to_date,
    vouched_files,
    wanted_files,
)
from frugal.serving.server.settings import ServeConfig
from frugal.storage import object_store
from frugal.storage.object_store import ObjectStore, ObjectStoreError, failure, location, publish_order

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_settings_and_environment_carry_no_keys() -> None:
    store = ObjectStore(
        endpoint="http://minio:9000",
        region="eu-west-1",
        addressing_style="path",
        credentials={"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": SECRET},
    )
    assert store.settings() == {
        "endpoint_url": "http://minio:9000",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    env = store.environment()
    assert json.loads(env["FSSPEC_S3"]) == store.settings() and list(env) == ["FSSPEC_S3"]
    assert SECRET not in repr(store) and SECRET not in json.dumps(env)
    options = store.storage_options()
    assert options["key"] == "AKIA" and options["secret"] == SECRET and "token" not in options


def test_defaults_set_nothing() -> None:
    assert ObjectStore().settings() == {} and ObjectStore().environment() == {}


def test_location_is_a_path_for_files_and_a_upath_for_s3() -> None:
    assert location("/srv/a") == Path("/srv/a") and location("file:///srv/a") == Path("/srv/a")
    assert type(location("relative/dir")) is type(Path("relative/dir"))
    remote = location("s3://bucket/gen-1")
    assert isinstance(remote, UPath) and object_store.is_remote(remote) and str(remote) == "s3://bucket/gen-1"
    assert not object_store.is_remote(location("/srv/a"))
    assert object_store.is_object_store("s3://b/k") and not object_store.is_object_store("file:///x")
    with pytest.raises(ValueError, match="'https' is not supported"):
        location("https://host/x")


@pytest.mark.parametrize(
    ("uri", "provider"),
    [
        ("s3://b/k", "s3"),
        ("gs://b/k", "gcs"),
        ("gcs://b/k", "gcs"),
        ("az://c/k", "azure"),
        ("abfs://c/k", "azure"),
    ],
)
def test_gcs_and_azure_uris_are_object_store_locations(uri: str, provider: str) -> None:
    assert object_store.provider_of(uri) == provider and object_store.is_object_store(uri)
    remote = location(uri)
    assert isinstance(remote, UPath) and object_store.is_remote(remote) and str(remote) == uri
    assert object_store.provider_of("file:///x") is None and object_store.provider_of("pvc://c/x") is None


def test_each_providers_settings_go_to_its_own_fsspec_variable_without_keys() -> None:
    key_json = json.dumps({"type": "service_account", "private_key": SECRET})
    store = ObjectStore(
        endpoint="https://store.example:9443/acct",
        region="eu-west-1",
        project="frugal-models",
        account_name="frugalmodels",
        credentials={"key.json": key_json, "AZURE_STORAGE_ACCOUNT_KEY": SECRET},
    )
    assert store.settings("gcs") == {
        "endpoint_url": "https://store.example:9443/acct",
        "project": "frugal-models",
    }
    assert store.settings("azure") == {
        "account_name": "frugalmodels",
        "account_host": "store.example:9443/acct",
    }
    env = store.environment(("gcs", "azure"))
    assert list(env) == ["FSSPEC_GCS", "FSSPEC_AZ"]
    assert json.loads(env["FSSPEC_AZ"]) == store.settings("azure") and SECRET not in json.dumps(env)
    assert store.storage_options("azure")["account_key"] == SECRET
    assert store.storage_options("gcs")["token"] == json.loads(key_json)  # gcsfs takes the key as a dict
    assert "key" not in store.storage_options("s3") and store.storage_options("s3")["endpoint_url"]
    assert ObjectStore().environment(("s3", "gcs", "azure")) == {}
    sas = ObjectStore(credentials={"AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=x"}).storage_options("azure")
    assert sas == {"sas_token": "sv=1&sig=x"}


def test_fsspec_applies_the_variables_to_every_scheme_of_the_provider() -> None:
    import fsspec.config
    import gcsfs.core
    from adlfs import AzureBlobFileSystem

    conf: dict[str, dict[str, Any]] = {}
    env = ObjectStore(endpoint="http://gcs:4443", project="p", account_name="acct").environment(
        ("gcs", "azure")
    )
    fsspec.config.set_conf_env(conf, env)
    assert fsspec.config.apply_config(gcsfs.core.GCSFileSystem, {}, conf) == {
        "endpoint_url": "http://gcs:4443",
        "project": "p",
    }
    assert fsspec.config.apply_config(AzureBlobFileSystem, {}, conf)["account_name"] == "acct"
    assert fsspec.get_filesystem_class("gs") is gcsfs.core.GCSFileSystem  # the stable one (see object_store)


def test_failure_names_the_uri_and_the_class_only() -> None:
    error = failure("s3://b/k", PermissionError(f"signature mismatch for {SECRET}"))
    assert isinstance(error, ObjectStoreError)
    assert str(error).startswith("s3://b/k: PermissionError: the credentials were refused")
    assert SECRET not in str(error)
    assert "no such bucket" in str(failure("s3://b/k", FileNotFoundError()))


def test_publish_order_puts_the_manifest_last() -> None:
    files = ["a.json", "manifest.json", "report.json", "variants/fp32/model.onnx"]
    assert publish_order(files) == ["a.json", "report.json", "variants/fp32/model.onnx", "manifest.json"]
    assert publish_order(["x"], ("manifest.json",)) == ["x"]


def artifact(root: Path) -> Path:
    (root / "variants" / "fp32").mkdir(parents=True)
    (root / "variants" / "fp32" / "model.onnx").write_bytes(b"onnx bytes")
    (root / "report.json").write_text("{}")
    (root / "manifest.json").write_text("{}")
    return root


def test_publish_to_a_directory_writes_everything_and_replaces_the_old_manifest(tmp_path: Path) -> None:
    source = artifact(tmp_path / "src")
    destination = tmp_path / "dst"
    destination.mkdir()
    (destination / "manifest.json").write_text("old")
    written = object_store.publish(source, destination)
    assert written[-1] == "manifest.json"
    assert object_store.local_files(destination) == object_store.local_files(source)
    assert (destination / "manifest.json").read_text() == "{}"


def test_a_publish_that_fails_midway_leaves_no_manifest(tmp_path: Path) -> None:
    source = artifact(tmp_path / "src")
    destination = tmp_path / "dst"
    destination.mkdir()
    (destination / "manifest.json").write_text("an earlier run's")
    (destination / "variants").write_text("a file where a folder must go")
    with pytest.raises(OSError):
        object_store.publish(source, destination)
    assert not (destination / "manifest.json").exists()


def test_remove_is_quiet_for_a_missing_file(tmp_path: Path) -> None:
    object_store.remove(tmp_path / "absent")
    (tmp_path / "present").write_text("x")
    object_store.remove(tmp_path / "present")
    assert not (tmp_path / "present").exists()


def test_download_refuses_names_outside_the_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a path inside"):
        object_store.download(tmp_path, ["../escape"], tmp_path / "out")


# ------------------------------------------------------------------------ fetching (serving/server/fetch)


def manifest_dir(root: Path) -> schema.Manifest:
    """A two-variant artifact, int8 with an external-data file beside its model."""
    files = {
        "variants/fp32/model.onnx": b"fp32",
        "variants/int8/model.onnx": b"int8",
        "variants/int8/model.onnx.data": b"weights",
        "report.json": b"{}",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    spec = schema.TensorSpec(name="input", datatype="FP32", shape=(-1, 4))
    manifest = schema.Manifest(
        model="m",
        generation=1,
        source="zoo://x",
        created_at="2026-01-01T00:00:00Z",
        files={name: schema.file_entry(root / name) for name in files},
        variants=tuple(
            schema.Variant(
                name=name,
                file=f"variants/{name}/model.onnx",
                steps=(),
                inputs=(spec,),
                outputs=(spec,),
                size_bytes=4,
                metric=None,
                latency=None,
            )
            for name in ("fp32", "int8")
        ),
    )
    schema.write_manifest(root, manifest)
    return manifest


def test_wanted_files_are_the_variants_and_their_neighbours(tmp_path: Path) -> None:
    manifest = manifest_dir(tmp_path)
    assert wanted_files(manifest, ["int8"]) == ["variants/int8/model.onnx", "variants/int8/model.onnx.data"]
    assert wanted_files(manifest, None) == [
        "variants/fp32/model.onnx",
        "variants/int8/model.onnx",
        "variants/int8/model.onnx.data",
    ]
    assert wanted_files(manifest, ["nope"]) == []  # the caller reports an unknown variant


def test_fetch_copies_what_is_missing_and_keeps_what_matches(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    manifest_dir(source)
    target = tmp_path / "local"
    first = fetch_artifacts(source, target, ["int8"])
    assert first.downloaded == ("variants/int8/model.onnx", "variants/int8/model.onnx.data")
    assert first.bytes_fetched == len(b"int8") + len(b"weights") and first.kept == ()
    assert not (target / "variants/fp32").exists() and (target / "manifest.json").is_file()
    (target / "variants/int8/model.onnx").write_bytes(b"INT8")  # same size, other bytes
    again = fetch_artifacts(source, target, ["int8"])
    assert again.downloaded == ("variants/int8/model.onnx",) and again.kept == (
        "variants/int8/model.onnx.data",
    )
    assert (target / "variants/int8/model.onnx").read_bytes() == b"int8"
    assert "fetched 1 file(s), 4 bytes" in again.summary("s3://b/gen-1")


def test_up_to_date_compares_size_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    digest = schema.sha256_file(path)
    assert up_to_date(path, 3, digest) and not up_to_date(path, 4, digest)
    assert not up_to_date(path, 3, "0" * 64) and not up_to_date(tmp_path / "none", 3, digest)


def test_default_fetch_dir_is_per_uri_under_the_temp_dir() -> None:
    a, b = default_fetch_dir("s3://b/gen-1"), default_fetch_dir("s3://b/gen-2")
    assert a != b and a.parent == b.parent and a == default_fetch_dir("s3://b/gen-1")


def test_serve_takes_an_s3_uri_and_a_fetch_dir() -> None:
    from frugal.serving.serve_command import parse_config

    config, _ = parse_config(
        ["--artifacts", "s3://bucket/gen-1", "--variant", "fp32", "--fetch-dir", "/f"], {}
    )
    assert isinstance(config.artifacts, UPath) and str(config.artifacts) == "s3://bucket/gen-1"
    assert config.fetch_dir == Path("/f")
    local, _ = parse_config(["--artifacts", "/a", "--variant", "fp32"], {})
    assert local.artifacts == Path("/a") and local.fetch_dir is None
    assert isinstance(ServeConfig(artifacts=Path("/a"), variant="v").artifacts, Path)


def test_each_providers_refusals_take_the_same_kinds_and_no_key_is_quoted() -> None:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob._shared.authentication import AzureSigningError
    from gcsfs.retry import HttpError
    from google.auth.exceptions import DefaultCredentialsError

    denied = HttpResponseError(f"signature mismatch for {SECRET}")
    denied.status_code = 403
    cases = [
        ("az://c/k", denied, "PermissionError", "HttpResponseError"),
        ("az://c/k", ClientAuthenticationError(SECRET), "PermissionError", "ClientAuthenticationError"),
        ("az://c/k", AzureSigningError(SECRET), "PermissionError", "AzureSigningError"),
        ("az://c/k", ResourceNotFoundError(SECRET), "FileNotFoundError", "ResourceNotFoundError"),
        ("gs://b/k", HttpError({"code": 401, "message": SECRET}), "PermissionError", "HttpError"),
        ("gs://b/k", OSError(f"Forbidden: b/k\n{SECRET}"), "PermissionError", "OSError"),
        ("gs://b/k", DefaultCredentialsError(SECRET), "NoCredentialsError", "DefaultCredentialsError"),
    ]
    for uri, error, kind, original in cases:
        failed = failure(uri, error)
        assert failed.kind == kind and failed.refused, (error, str(failed))
        assert str(failed).startswith(f"{uri}: {kind} ({original})") and SECRET not in str(failed)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(failure("gs://b/k", DefaultCredentialsError()))
    unreachable = failure("az://c/k", ServiceRequestError(SECRET))
    assert not unreachable.refused and str(unreachable) == "az://c/k: ServiceRequestError"
    assert not failure("gs://b/k", HttpError({"code": 503})).refused


def test_refusals_are_bad_input_and_the_rest_a_failed_run() -> None:
    class EndpointConnectionError(Exception):
        pass

    class NoCredentialsError(Exception):
        pass

    assert failure("s3://b/k", PermissionError()).refused
    assert failure("s3://b/k", FileNotFoundError()).refused
    assert failure("s3://b/k", NoCredentialsError()).refused
    unreachable = failure("s3://b/k", EndpointConnectionError())
    assert not unreachable.refused and str(unreachable) == "s3://b/k: EndpointConnectionError"


def test_a_file_the_verify_cache_vouches_for_is_kept_without_hashing_and_a_changed_one_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    recorded = "0" * 64  # not the file's sha256: only trust could keep it
    assert up_to_date(path, 3, recorded, {str(path.resolve()): recorded})
    cache = tmp_path / "verify-cache"
    VerifyCache(cache).record({path.resolve(): (FileStat.of(path), recorded)})
    assert vouched_files(cache) == {str(path.resolve()): recorded}
    path.write_bytes(b"xyz")  # same size, a new ctime: the cache no longer vouches for it
    assert vouched_files(cache) == {} and vouched_files(None) == {}
