"""Where a generation's artifacts live, seen from a pod and from the operator.

- ``file:///dir`` — a directory on the node (a hostPath volume in pods) and, for the operator and the
  local runtime, the same directory on this machine;
- ``pvc://claim/sub/dir`` — a PersistentVolumeClaim mounted in pods at :data:`POD_MOUNT`; the operator
  reads it under its own ``--pvc-root`` (the chart mounts the default claim there);
- an object-store URI (``s3://``, ``gs://``, ...) — passed to the pods as is (fsspec reads it).

Each ModelDeployment generation gets ``<root>/<namespace>/<name>/gen-<N>``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from frugal.operator.controller.spec import Owner

POD_MOUNT = "/var/lib/frugal/artifacts"
VOLUME_NAME = "artifacts"


@dataclass(frozen=True)
class ArtifactLocation:
    """A generation's artifact directory: its URI, its path inside pods, and the volume that holds it."""

    uri: str
    pod_path: str
    volume: dict[str, Any] | None
    operator_path: Path | None

    def mount(self, read_only: bool) -> list[dict[str, Any]]:
        if self.volume is None:
            return []
        return [{"name": VOLUME_NAME, "mountPath": self.volume_mount_path, "readOnly": read_only}]

    @property
    def volume_mount_path(self) -> str:
        if self.volume is not None and "hostPath" in self.volume:
            return str(self.volume["hostPath"]["path"])
        return POD_MOUNT

    def volumes(self) -> list[dict[str, Any]]:
        return [] if self.volume is None else [self.volume]


def locate(root_uri: str, owner: Owner, pvc_root: Path | None = None) -> ArtifactLocation:
    """The artifact directory of `owner`'s current generation under `root_uri`."""
    suffix = posixpath.join(owner.namespace, owner.name, f"gen-{owner.generation}")
    parsed = urlparse(root_uri)
    if parsed.scheme == "file":
        root = posixpath.normpath(parsed.path or "/")
        path = posixpath.join(root, suffix)
        volume = {"name": VOLUME_NAME, "hostPath": {"path": root, "type": "DirectoryOrCreate"}}
        return ArtifactLocation(f"file://{path}", path, volume, Path(path))
    if parsed.scheme == "pvc":
        claim, sub = parsed.netloc, parsed.path.strip("/")
        pod_path = posixpath.join(POD_MOUNT, sub, suffix)
        volume = {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}
        operator_path = None if pvc_root is None else pvc_root / claim / sub / suffix
        return ArtifactLocation(
            f"pvc://{claim}/{posixpath.join(sub, suffix)}", pod_path, volume, operator_path
        )
    uri = root_uri.rstrip("/") + "/" + suffix
    return ArtifactLocation(uri, uri, None, None)
