"""Where a generation's artifacts live, seen from a pod and from the operator.

- ``file:///dir`` — a directory on the node (a hostPath volume in pods) and, for the operator and the
  local runtime, the same directory on this machine;
- ``pvc://claim/sub/dir`` — a PersistentVolumeClaim mounted in pods at :data:`POD_MOUNT`; the operator
  reads it under its own ``--pvc-root`` (the chart mounts the default claim there);

Object stores are not artifact locations yet: the CRD rejects them, and :func:`locate` refuses them
(the operator's ``--default-storage`` goes through it too).

Each ModelDeployment generation gets ``<root>/<namespace>/<name>/gen-<N>``.

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

from frugal.operator.api.spec import Owner, has_parent_segment
from frugal.operator.manifests import names

POD_MOUNT = "/var/lib/frugal/artifacts"
VOLUME_NAME = "artifacts"
CLAIMS_MOUNT = "/var/lib/frugal/claims"
PVC_ROOT_ENV = "FRUGAL_PVC_ROOT"
STORAGE_SCHEMES = ("file", "pvc")  # what spec.storage.uri's pattern in the CRD admits


@dataclass(frozen=True)
class ArtifactLocation:
    """A generation's artifact directory: its URI, its path inside pods, and the volume that holds it."""

    uri: str
    pod_path: str
    volume: dict[str, Any]
    operator_path: Path | None

    def mount(self, read_only: bool) -> list[dict[str, Any]]:
        return [{"name": VOLUME_NAME, "mountPath": self.volume_mount_path, "readOnly": read_only}]

    @property
    def volume_mount_path(self) -> str:
        if "hostPath" in self.volume:
            return str(self.volume["hostPath"]["path"])
        return POD_MOUNT

    def volumes(self) -> list[dict[str, Any]]:
        return [self.volume]

    @property
    def claim(self) -> str | None:
        """The PersistentVolumeClaim that holds the artifacts, if any."""
        if "persistentVolumeClaim" not in self.volume:
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


def locate(root_uri: str, owner: Owner, pvc_root: Path | None = None) -> ArtifactLocation:
    """The artifact directory of `owner`'s current generation under `root_uri`."""
    suffix = posixpath.join(owner.namespace, owner.name, f"gen-{owner.generation}")
    parsed = urlparse(root_uri)
    if parsed.scheme == "file":
        root = posixpath.normpath(parsed.path or "/")
        path = posixpath.join(root, suffix)
        volume = {"name": VOLUME_NAME, "hostPath": {"path": root, "type": "DirectoryOrCreate"}}
        return ArtifactLocation(f"file://{path}", path, volume, Path(path))
    if (pvc := split_pvc(root_uri)) is not None:
        claim, sub = pvc
        if has_parent_segment(sub):  # the CRD refuses these; the deletion cleanup must never climb out
            raise ValueError(f"artifact storage {root_uri!r}: '..' path segments are not allowed")
        pod_path = posixpath.join(POD_MOUNT, sub, suffix)
        volume = {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}
        operator_path = None if pvc_root is None else pvc_root / claim / sub / suffix
        return ArtifactLocation(
            f"pvc://{claim}/{posixpath.join(sub, suffix)}", pod_path, volume, operator_path
        )
    raise ValueError(
        f"artifact storage {root_uri!r} is not supported: use pvc://<claim>/<path> or file:///<path> "
        "(object stores are not yet supported for artifacts)"
    )
