"""Where the operator reads artifacts from (`operator/control/artifact_access.py`), against the in-memory
API of `frugal up` (`frugal.operator.local.store.Store`, the same ClusterPort the reconciler takes)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from upath import UPath

from frugal.operator.api import models
from frugal.operator.api.spec import Owner
from frugal.operator.control.artifact_access import artifact_directory, secret_keys
from frugal.operator.local.store import Store
from frugal.operator.manifests.storage import StoreAccess, locate, store_access
from frugal.schema.artifact_format import ArtifactError
from frugal.storage.object_store import ObjectStore

OWNER = Owner(namespace="ml", name="digits", uid="u-1", generation=2)
ACCESS = StoreAccess("bucket-keys", ObjectStore(endpoint="http://store:8333", addressing_style="path"))


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def store_with(data: dict[str, Any] | None) -> Store:
    store = Store()
    if data is not None:
        store.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bucket-keys", "namespace": "ml"},
                "data": data,
            }
        )
    return store


def test_the_operator_reads_the_bucket_with_the_secrets_keys_and_the_specs_settings() -> None:
    store = store_with({"AWS_ACCESS_KEY_ID": encoded("id-1"), "AWS_SECRET_ACCESS_KEY": encoded("s3cr3t")})
    directory = artifact_directory(store, locate("s3://models/frugal", OWNER, access=ACCESS), "ml")
    assert isinstance(directory, UPath) and str(directory) == "s3://models/frugal/ml/digits/gen-2"
    options = directory.storage_options
    assert options["key"] == "id-1" and options["secret"] == "s3cr3t"
    assert options["endpoint_url"] == "http://store:8333"
    assert options["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert "s3cr3t" not in repr(ACCESS) + repr(ObjectStore(credentials={"AWS_SECRET_ACCESS_KEY": "s3cr3t"}))


def test_a_claim_is_read_where_the_operator_mounts_it_and_no_secret_is_read(tmp_path: Any) -> None:
    location = locate("pvc://frugal-artifacts/", OWNER, pvc_root=tmp_path)
    assert artifact_directory(Store(), location, "ml") == tmp_path / "frugal-artifacts/ml/digits/gen-2"
    assert artifact_directory(Store(), locate("pvc://frugal-artifacts/", OWNER), "ml") is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "Secret ml/bucket-keys (spec.objectStore.secretName, or the operator's --object-store) does not "
               "exist: create it with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": encoded("id-1")}, "has no AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "not base64!", "AWS_SECRET_ACCESS_KEY": encoded("x")},
         "the value of AWS_ACCESS_KEY_ID is not base64 of UTF-8 text"),
    ],
)  # fmt: skip
def test_a_missing_or_unusable_secret_is_an_artifact_error_that_says_what_to_fix(
    data: dict[str, Any] | None, expected: str
) -> None:
    with pytest.raises(ArtifactError) as raised:
        secret_keys(store_with(data), "ml", "bucket-keys")
    assert expected in str(raised.value)
    assert "not base64!" not in str(raised.value)


def test_pods_get_each_providers_keys_the_way_its_client_reads_them() -> None:
    settings = ObjectStore(endpoint="https://blob.example/acct", project="frugal-models", account_name="acct")
    azure = StoreAccess("store-keys", settings, ("azure",))
    env = {e["name"]: e for e in azure.env()}
    assert json.loads(env["FSSPEC_AZ"]["value"]) == {
        "account_name": "acct",
        "account_host": "blob.example/acct",
    }
    for key in ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"):
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "store-keys", "key": key, "optional": True}}
    assert azure.volumes() == [] and azure.mounts() == []
    gcs = StoreAccess("store-keys", settings, ("gcs",))
    assert gcs.env()[1:] == [
        {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/frugal/object-store/key.json"}
    ]
    assert gcs.volumes() == [
        {
            "name": "object-store-key",
            "secret": {
                "secretName": "store-keys",
                "items": [{"key": "key.json", "path": "key.json"}],
                "defaultMode": 0o440,
            },
        }
    ]
    assert gcs.mounts() == [
        {"name": "object-store-key", "mountPath": "/var/run/secrets/frugal/object-store", "readOnly": True}
    ]
    ambient = StoreAccess(None, settings, ("gcs",))
    assert ambient.volumes() == [] and [e["name"] for e in ambient.env()] == ["FSSPEC_GCS"]
    both = StoreAccess("store-keys", ObjectStore(), ("azure", "s3"))
    assert {e["name"] for e in both.env()} >= {"AWS_ACCESS_KEY_ID", "AZURE_STORAGE_ACCOUNT_KEY"}
    assert "valueFrom" not in json.dumps([e for e in both.env() if "value" in e])


def test_a_gcs_artifact_location_mounts_the_key_file_in_its_pods() -> None:
    access = store_access(
        models.ObjectStore(secret_name="store-keys", project="frugal-models", addressing_style="auto"),
        None,
        ["zoo://digits-mlp", "gs://models/frugal"],
    )
    assert access is not None and access.providers == ("gcs",) and access.settings.project == "frugal-models"
    location = locate("gs://models/frugal", OWNER, access=access)
    assert [v["name"] for v in location.volumes()] == ["object-store-key"]
    assert location.mount(read_only=False)[0]["readOnly"] is True
    assert store_access(None, None, ["pvc://c/x", "file:///y"]) is None


@pytest.mark.parametrize(
    ("uri", "data", "options"),
    [
        ("az://models/frugal", {"AZURE_STORAGE_ACCOUNT_KEY": encoded("a2V5")}, {"account_key": "a2V5"}),
        ("az://models/frugal", {"AZURE_STORAGE_SAS_TOKEN": encoded("sv=1&sig=x")}, {"sas_token": "sv=1&sig=x"}),
        ("gs://models/frugal", {"key.json": encoded('{"type": "service_account"}')}, {"token": {"type": "service_account"}}),
    ],
)  # fmt: skip
def test_the_operator_reads_gcs_and_azure_with_the_secrets_keys(
    uri: str, data: dict[str, str], options: dict[str, Any]
) -> None:
    settings = ObjectStore(endpoint="https://store.example", project="frugal-models", account_name="acct")
    provider = "gcs" if uri.startswith("gs") else "azure"
    location = locate(uri, OWNER, access=StoreAccess("bucket-keys", settings, (provider,)))  # type: ignore[arg-type]
    directory = artifact_directory(store_with(data), location, "ml")
    assert isinstance(directory, UPath) and str(directory) == f"{uri}/ml/digits/gen-2"
    assert directory.storage_options.items() >= options.items()


@pytest.mark.parametrize(
    ("provider", "data", "expected"),
    [
        ("azure", None, "create it with the keys one of AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, "
                        "AZURE_STORAGE_CONNECTION_STRING"),
        ("azure", {"AWS_ACCESS_KEY_ID": encoded("x")}, "has no AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN"),
        ("gcs", {"AWS_ACCESS_KEY_ID": encoded("x")}, "has no key.json"),
        ("gcs", {"key.json": encoded("-----BEGIN PRIVATE KEY----- s3cr3t")}, "key.json is not a service-account JSON key"),
    ],
)  # fmt: skip
def test_a_secret_without_the_providers_keys_says_which_it_needs(
    provider: str, data: dict[str, Any] | None, expected: str
) -> None:
    with pytest.raises(ArtifactError) as raised:
        secret_keys(store_with(data), "ml", "bucket-keys", provider)  # type: ignore[arg-type]
    assert expected in str(raised.value) and "s3cr3t" not in str(raised.value)
