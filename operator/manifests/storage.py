"""Where a generation's artifacts live, seen from a pod and from the operator.

- ``file:///dir`` — a directory on the node (a hostPath volume in pods) and, for the operator and the
  local runtime, the same directory on this machine;
- ``pvc://claim/sub/dir`` — a PersistentVolumeClaim mounted in pods at :data:`POD_MOUNT`; the operator
  reads it under its own ``--pvc-root`` (the chart mounts the default claim there);

- ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix`` — an object store: pods
  mount no volume for it, the components read and write the URI themselves (``frugal.storage``), and
  the operator reads manifests, reports and profiles through it with the keys of the ModelDeployment's
  object-store Secret (:class:`StoreAccess`). The keys reach pods as environment variables (S3, Azure)
  or, for GCS, as the Secret's ``key.json`` mounted read-only at :data:`KEY_MOUNT`.

Each ModelDeployment generation gets ``<root>/<namespace>/<name>/gen-<N>``.

Deleting a ModelDeployment removes ``<root>/<namespace>/<name>`` (:func:`own_directory`), but only
where that is the ModelDeployment's own directory of the operator's layout: ``<claim>/<default
sub-path>/<namespace>/<name>``, the default sub-path being the one of ``--storage-uri`` on that claim
(none on another claim). A ``spec.storage.uri`` may name any sub-path, and the operator sees every
``pvc://<claim>`` under one ``--pvc-root`` whatever namespace the claim is in (the chart's story is one
shared volume), so the sub-path is the author's to aim: with sub-path ``Y``, namespace ``V`` and name
``gen-1`` the directory would be ``<claim>/Y/V/gen-1``, the first generation of ModelDeployment ``V``
of namespace ``Y``. Directories ``<base>/<namespace>/<name>`` of one ``<base>`` never nest (same depth,
distinct names), and a sub-path that starts with ``<base>/<namespace>/<name>/`` stays inside its own;
any other sub-path could meet another ModelDeployment's directory, whatever namespaces exist, so its
artifacts are kept (:class:`NotConfined`).

Inputs (``spec.model.uri``, ``spec.data.*.uri``) on ``pvc://claim/path`` are read by the compression
Job from the claim mounted read-only at ``<CLAIMS_MOUNT>/<claim>``, with ``FRUGAL_PVC_ROOT`` set to
:data:`CLAIMS_MOUNT` (the compression component reads ``$FRUGAL_PVC_ROOT/<claim>/<path>``).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from frugal.operator.api import models
from frugal.operator.api.spec import Owner, has_parent_segment
from frugal.operator.manifests import names
from frugal.storage import object_store

POD_MOUNT = "/var/lib/frugal/artifacts"
VOLUME_NAME = "artifacts"
CLAIMS_MOUNT = "/var/lib/frugal/claims"
PVC_ROOT_ENV = "FRUGAL_PVC_ROOT"
# what spec.storage.uri's pattern in the CRD admits
STORAGE_SCHEMES = ("file", "pvc", *object_store.OBJECT_STORE_SCHEMES)
KEY_VOLUME = "object-store-key"
KEY_MOUNT = "/var/run/secrets/frugal/object-store"  # the GCS key file: <KEY_MOUNT>/key.json
KEY_FILE_MODE = 0o440  # read-only, owner root and the pod's fsGroup


@dataclass(frozen=True)
class StoreAccess:
    """How a ModelDeployment's pods reach its object store: the settings as fsspec's ``FSSPEC_S3``,
    ``FSSPEC_GCS`` or ``FSSPEC_AZ`` for each provider its URIs name, the keys as references to the Secret
    (its values never enter a manifest): S3's and Azure's as environment variables, GCS's key file as a
    read-only Secret volume that ``GOOGLE_APPLICATION_CREDENTIALS`` names."""

    secret_name: str | None
    settings: object_store.ObjectStore
    providers: tuple[object_store.Provider, ...] = ("s3",)

    def env(self) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [
            {"name": k, "value": v} for k, v in self.settings.environment(self.providers).items()
        ]
        if not self.secret_name:
            return env
        for provider in self.providers:
            if provider == "gcs":
                path = posixpath.join(KEY_MOUNT, object_store.GCS_KEY_FILE)
                env.append({"name": object_store.GCS_CREDENTIALS_ENV, "value": path})
                continue
            required, needs = object_store.REQUIRED_KEYS[provider]
            for key in object_store.PROVIDER_KEYS[provider]:
                ref: dict[str, Any] = {"name": self.secret_name, "key": key}
                if needs == "any" or key not in required:
                    ref["optional"] = True
                env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        return env

    def volumes(self) -> list[dict[str, Any]]:
        """The GCS key file's Secret volume (only its ``key.json``), where a GCS URI is in use."""
        if not self.secret_name or "gcs" not in self.providers:
            return []
        key = object_store.GCS_KEY_FILE
        secret = {
            "secretName": self.secret_name,
            "items": [{"key": key, "path": key}],
            "defaultMode": KEY_FILE_MODE,
        }
        return [{"name": KEY_VOLUME, "secret": secret}]

    def mounts(self) -> list[dict[str, Any]]:
        return [{"name": v["name"], "mountPath": KEY_MOUNT, "readOnly": True} for v in self.volumes()]


def store_access(
    spec_store: models.ObjectStore | None, default: models.ObjectStore | None, uris: Iterable[str]
) -> StoreAccess | None:
    """The object-store access of pods that use `uris`: None when none is an object store; else the
    spec's ``objectStore``, or the operator's default, or (neither) the pods' own ambient credentials."""
    providers = tuple(sorted({p for uri in uris if (p := object_store.provider_of(uri)) is not None}))
    if not providers:
        return None
    chosen = spec_store or default
    if chosen is None:
        return StoreAccess(None, object_store.ObjectStore(), providers)
    settings = object_store.ObjectStore(
        chosen.endpoint,
        chosen.region,
        chosen.addressing_style,
        project=chosen.project,
        account_name=chosen.account_name,
    )
    return StoreAccess(chosen.secret_name, settings, providers)


@dataclass(frozen=True)
class ArtifactLocation:
    """A generation's artifact directory: its URI, its path inside pods (the URI itself for an object
    store, which pods reach without a volume), the volume that holds it, and how pods reach the
    ModelDeployment's object store, if it uses one."""

    uri: str
    pod_path: str
    volume: dict[str, Any] | None
    operator_path: Path | None
    access: StoreAccess | None = None

    def mount(self, read_only: bool) -> list[dict[str, Any]]:
        keys = [] if self.access is None else self.access.mounts()
        if self.volume is None:
            return keys
        return [{"name": VOLUME_NAME, "mountPath": self.volume_mount_path, "readOnly": read_only}, *keys]

    @property
    def volume_mount_path(self) -> str:
        if self.volume is not None and "hostPath" in self.volume:
            return str(self.volume["hostPath"]["path"])
        return POD_MOUNT

    def volumes(self) -> list[dict[str, Any]]:
        """The artifacts' volume (none for an object store) and the GCS key file's, if any."""
        keys = [] if self.access is None else self.access.volumes()
        return keys if self.volume is None else [self.volume, *keys]

    def env(self) -> list[dict[str, Any]]:
        """What pods need to reach the object store (nothing without one)."""
        return [] if self.access is None else self.access.env()

    @property
    def in_object_store(self) -> bool:
        return object_store.is_object_store(self.uri)

    @property
    def claim(self) -> str | None:
        """The PersistentVolumeClaim that holds the artifacts, if any."""
        if self.volume is None or "persistentVolumeClaim" not in self.volume:
            return None
        return str(self.volume["persistentVolumeClaim"]["claimName"])


def split_pvc(uri: str) -> tuple[str, str] | None:
    """``pvc://claim/sub/path`` as ``("claim", "sub/path")``; None for any other scheme."""
    parsed = urlparse(uri)
    if parsed.scheme != "pvc":
        return None
    return parsed.netloc, parsed.path.strip("/")


def claims_named(uris: Iterable[str]) -> tuple[str, ...]:
    """The distinct claims that the pvc:// URIs among `uris` name, sorted (other schemes name none)."""
    return tuple(sorted({pvc[0] for uri in uris if (pvc := split_pvc(uri)) is not None and pvc[0]}))


def claim_volume_name(claim: str) -> str:
    """``input-<claim>`` when that is a DNS-1123 label of at most 63 characters; otherwise its
    sanitized first 54 characters, ``-`` and 8 hex digits of the claim's sha256 (distinct claims
    whose sanitized names meet, such as ``a.b`` and ``a-b``, still get distinct volumes)."""
    plain = f"input-{claim}"
    if names.bounded(plain) == plain:
        return plain
    keep = names.DNS_LABEL_MAX - 9
    digest = hashlib.sha256(claim.encode()).hexdigest()[:8]
    return f"{names.bounded(plain[:keep], limit=keep)}-{digest}"


def claim_mounts(
    claims: Iterable[str], artifacts: ArtifactLocation
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and read-only mounts that show each claim at ``<CLAIMS_MOUNT>/<claim>``.

    The artifacts claim is mounted again from the artifacts volume rather than from a second volume:
    a pod with two volumes of one claim can hang in ContainerCreating (kubernetes#132921).
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for claim in claims:
        name = VOLUME_NAME if claim == artifacts.claim else claim_volume_name(claim)
        if name != VOLUME_NAME:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": name, "mountPath": posixpath.join(CLAIMS_MOUNT, claim), "readOnly": True})
    return volumes, mounts


def locate(
    root_uri: str, owner: Owner, pvc_root: Path | None = None, access: StoreAccess | None = None
) -> ArtifactLocation:
    """The artifact directory of `owner`'s current generation under `root_uri`; `access`: how the
    ModelDeployment's pods reach its object store (:func:`store_access`)."""
    suffix = posixpath.join(owner.namespace, owner.name, f"gen-{owner.generation}")
    parsed = urlparse(root_uri)
    if object_store.is_object_store(root_uri):
        if not parsed.netloc or has_parent_segment(parsed.path):
            raise ValueError(
                f"artifact storage {root_uri!r}: use {parsed.scheme}://<bucket>/<prefix> without '..' segments"
            )
        uri = (
            f"{parsed.scheme}://{parsed.netloc}/{posixpath.join(parsed.path.strip('/'), suffix).lstrip('/')}"
        )
        return ArtifactLocation(uri, uri, None, None, access)
    if parsed.scheme == "file":
        root = posixpath.normpath(parsed.path or "/")
        path = posixpath.join(root, suffix)
        volume = {"name": VOLUME_NAME, "hostPath": {"path": root, "type": "DirectoryOrCreate"}}
        return ArtifactLocation(f"file://{path}", path, volume, Path(path), access)
    if (pvc := split_pvc(root_uri)) is not None:
        claim, sub = pvc
        if has_parent_segment(sub):  # the CRD refuses these; the deletion cleanup must never climb out
            raise ValueError(f"artifact storage {root_uri!r}: '..' path segments are not allowed")
        pod_path = posixpath.join(POD_MOUNT, sub, suffix)
        volume = {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}
        operator_path = None if pvc_root is None else pvc_root / claim / sub / suffix
        return ArtifactLocation(
            f"pvc://{claim}/{posixpath.join(sub, suffix)}", pod_path, volume, operator_path, access
        )
    raise ValueError(
        f"artifact storage {root_uri!r} is not supported: use s3://, gs:// or az://<bucket>/<prefix>, "
        "pvc://<claim>/<path> or file:///<path>"
    )


class NotConfined(ValueError):
    """The deletion cleanup's target is not the ModelDeployment's own directory: nothing is deleted."""


@dataclass(frozen=True)
class OwnDirectory:
    """What deleting a ModelDeployment removes (`path`), and the store's root it lies under (`root`)."""

    path: Path
    root: Path

    def check_links(self) -> None:
        """Raise :class:`NotConfined` when a component between `root` and `path` is a symbolic link now
        (reads the filesystem): a link planted on a shared volume would take the deletion elsewhere."""
        resolved = self.path.resolve()
        if resolved != self.root.resolve() / self.path.relative_to(self.root):
            raise NotConfined(f"{self.path} resolves to {resolved} through a symbolic link: artifacts kept")


@dataclass(frozen=True)
class OwnPrefix:
    """What deleting a ModelDeployment removes from a bucket: every object under ``uri/``."""

    uri: str


def own_directory(
    storage_uri: str, default_uri: str, owner: Owner, pvc_root: Path | None
) -> OwnDirectory | OwnPrefix | None:
    """The directory of all `owner`'s generations under `storage_uri`, as the operator sees it (None:
    it cannot), checked to lie inside the owner's own directory of the layout (see the module's
    docstring; `default_uri` is the operator's --storage-uri). Pure: the paths are normalized as text,
    never looked up; :meth:`OwnDirectory.check_links` is the look-up, just before deleting."""
    parsed = urlparse(storage_uri)
    if parsed.scheme == "file":  # hostPath allowed: a single-node development cluster, or `frugal up`
        root = Path(posixpath.normpath(parsed.path or "/"))
        return OwnDirectory(_below(root, "", owner.namespace, owner.name), root)
    if object_store.is_object_store(storage_uri):  # a bucket is confined as a claim is
        operators = urlparse(default_uri)
        same_bucket = (operators.scheme, operators.netloc) == (parsed.scheme, parsed.netloc)
        root = Path("/") / parsed.netloc
        target = _confined(root, operators.path if same_bucket else "", parsed.path, owner, storage_uri)
        return OwnPrefix(f"{parsed.scheme}://{target.relative_to('/')}")
    pvc = split_pvc(storage_uri)
    if pvc is None:
        raise ValueError(f"artifact storage {storage_uri!r} is not supported")
    if pvc_root is None:
        return None
    claim, sub = pvc
    default = split_pvc(default_uri)
    base = default[1] if default is not None and default[0] == claim else ""
    root = _below(pvc_root, "", claim)
    return OwnDirectory(_confined(root, base, sub, owner, storage_uri), root)


def _confined(root: Path, base: str, sub: str, owner: Owner, storage_uri: str) -> Path:
    """`root/sub/<namespace>/<name>`, checked to lie inside `root/base/<namespace>/<name>`, the owner's
    own directory of the operator's layout (`base`: the operator's sub-path on this claim or bucket)."""
    base, sub = base.strip("/"), sub.strip("/")
    own = _below(root, base, owner.namespace, owner.name)
    target = _below(root, sub, owner.namespace, owner.name)
    if not target.is_relative_to(own):
        raise NotConfined(
            f"spec.storage.uri {storage_uri!r}: {target} is not inside {own}, this ModelDeployment's own "
            "directory, and could be another's: artifacts kept (use the operator's storage, or a sub-path "
            f"under {posixpath.join(base, owner.namespace, owner.name)}/)"
        )
    return target


def _below(root: Path, sub: str, *names_: str) -> Path:
    """`root` joined with the sub-path `sub` and the single segments `names_`, normalized as text;
    strictly under `root` when `names_` are given."""
    if has_parent_segment(sub) or any(n in ("", ".", "..") or "/" in n for n in names_):
        raise NotConfined(f"{sub!r}, {names_!r}: not a path below {root}")
    joined = Path(posixpath.normpath(posixpath.join(str(root), sub.strip("/"), *names_)))
    if names_ and (joined == root or not joined.is_relative_to(root)):
        raise NotConfined(f"{joined} is not below {root}")
    return joined
