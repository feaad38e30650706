"""Where the operator reads artifacts from (`operator/control/artifact_access.py`), against the in-memory
API of `frugal up` (`frugal.operator.local.store.Store`, the same ClusterPort the reconciler takes)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from upath import UPath

from frugal.operator.api.spec import Owner
from frugal.operator.control.artifact_access import artifact_directory, secret_keys
from frugal.operator.local.store import Store
from frugal.operator.manifests.storage import StoreAccess, locate
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
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bucket-keys", "namespace": "ml"}, "data": data}
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
