"""Where the operator itself reads a generation's artifacts: its own view of the volume, or the object
store with the keys of the ModelDeployment's object-store Secret.

The keys are read from the API server for each pass that reads artifacts and handed only to the
object-store client: they are never logged, and never written into a status, an Event or a manifest
(the pods get references to the Secret, :class:`~frugal.operator.manifests.storage.StoreAccess`).
The chart grants ``get`` on the Secret names it is given, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json

from upath import UPath

from frugal.operator.control.port import ApiError, ClusterPort
from frugal.operator.manifests.storage import ArtifactLocation, OwnPrefix, StoreAccess
from frugal.schema.artifact_format import ArtifactError
from frugal.storage import object_store


def artifact_directory(
    cluster: ClusterPort, location: ArtifactLocation, namespace: str
) -> object_store.Location | None:
    """The artifact directory as the operator reads it (None: it cannot see the volume). Raises
    :class:`ArtifactError` when the object store's Secret is missing or unreadable."""
    if not location.in_object_store:
        return location.operator_path
    return opened(cluster, location.uri, location.access, namespace)


def remove_prefix(
    cluster: ClusterPort, prefix: OwnPrefix, access: StoreAccess | None, namespace: str
) -> None:
    """Delete every object under `prefix` (a deleted ModelDeployment's artifacts in a bucket). Raises
    :class:`ArtifactError` naming the URI and the error class when the store refuses or fails (the
    objects are then kept, and the caller says so in an Event)."""
    folder = opened(cluster, prefix.uri, access, namespace)
    try:
        folder.fs.rm(folder.path + "/", recursive=True)
    except FileNotFoundError:
        return  # nothing was ever written there
    except Exception as error:
        raise ArtifactError(f"artifacts kept: {object_store.failure(prefix.uri, error)}") from None


def opened(cluster: ClusterPort, uri: str, access: StoreAccess | None, namespace: str) -> UPath:
    """`uri` (an object store's) opened with the keys of `access`'s Secret in `namespace` (none named:
    the operator's ambient credentials). Raises :class:`ArtifactError` when the Secret cannot be read."""
    settings = access.settings if access is not None else object_store.ObjectStore()
    credentials = {}
    provider = object_store.provider_of(uri)
    if access is not None and access.secret_name and provider is not None:
        credentials = secret_keys(cluster, namespace, access.secret_name, provider)
    opened = object_store.location(uri, dataclasses.replace(settings, credentials=credentials))
    assert isinstance(opened, UPath), uri  # only object-store URIs come here
    return opened


def secret_keys(
    cluster: ClusterPort, namespace: str, name: str, provider: object_store.Provider = "s3"
) -> dict[str, str]:
    """`provider`'s keys in Secret `namespace/name` (those of :data:`object_store.PROVIDER_KEYS` it
    holds): S3's two or three, GCS's ``key.json`` (checked to be a JSON object), one or more of Azure's."""
    required, needs = object_store.REQUIRED_KEYS[provider]
    wanted = " and ".join(required) if needs == "all" else "one of " + ", ".join(required)
    where = f"Secret {namespace}/{name} (spec.objectStore.secretName, or the operator's --object-store)"
    try:
        secret = cluster.get("v1", "Secret", namespace, name)
    except ApiError as error:
        if error.status == 403:
            raise ArtifactError(
                f"the operator may not read {where}: add {name!r} to the chart's objectStore.secretNames"
            ) from None
        raise
    if secret is None:
        raise ArtifactError(f"{where} does not exist: create it with the keys {wanted}")
    data = secret.get("data") or {}
    keys: dict[str, str] = {}
    for key in object_store.PROVIDER_KEYS[provider]:
        if key in data:
            try:
                keys[key] = base64.b64decode(data[key], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ArtifactError(f"{where}: the value of {key} is not base64 of UTF-8 text") from None
        elif key in (secret.get("stringData") or {}):  # a Secret as `frugal up` keeps it, never encoded
            keys[key] = str(secret["stringData"][key])
    missing = [k for k in required if k not in keys]
    if missing and (needs == "all" or len(missing) == len(required)):
        raise ArtifactError(f"{where} has no {' or '.join(missing)}")
    if object_store.GCS_KEY_FILE in keys and not _json_object(keys[object_store.GCS_KEY_FILE]):
        raise ArtifactError(f"{where}: {object_store.GCS_KEY_FILE} is not a service-account JSON key")
    return keys


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
