"""The operator's own configuration: what its command-line flags (or their environment variables)
set for every ModelDeployment it reconciles. `frugal operator` builds it from the flags
(:func:`frugal.operator.cluster.operator_options.settings_from`); `frugal up` sets its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal.operator.api.models import ObjectStore
from frugal.operator.api.spec import HardwareProfileSpec
from frugal.operator.manifests import images


@dataclass(frozen=True)
class Settings:
    """The operator's own configuration (command-line flags)."""

    # The full image (compression); the serving and gpu images default to its siblings
    # (manifests.images): "" means derived.
    image: str = images.DEFAULT_FULL
    serving_image: str = ""
    gpu_image: str = ""
    storage_uri: str = "pvc://frugal-artifacts"
    pvc_root: Path | None = None
    # How pods (and the operator) reach object stores for ModelDeployments without spec.objectStore;
    # its secretName names a Secret in each ModelDeployment's namespace.
    object_store: ObjectStore | None = None
    # file:// URIs: a directory of the node (hostPath) or of the pod's image. For `frugal up` and a
    # single-node development cluster only; off, the operator refuses them with a condition.
    allow_host_path: bool = False
    # The nodes' model cache directory (the chart's DaemonSet serves it): serving pods share verified
    # variants there through a claim per namespace (manifests.node_cache); None: no cache.
    node_cache_root: str | None = None
    # NetworkPolicies for every ModelDeployment's pods (manifests.network_policies), admitting
    # Prometheus from `monitoring_namespace`.
    network_policies: bool = False
    monitoring_namespace: str = "monitoring"
    # nodeSelector and tolerations of the always-on fronts: the operator's own (the chart passes them).
    front_placement: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serving_default(self) -> str:
        return self.serving_image or images.sibling(self.image, "serving")

    @property
    def gpu_default(self) -> str:
        return self.gpu_image or images.sibling(self.image, "gpu")

    def compression_image(self, profile: HardwareProfileSpec) -> str:
        return images.compression(self.image, self.gpu_default, profile)

    def serving_image_for(self, profile: HardwareProfileSpec) -> str:
        return images.serving(self.serving_default, self.gpu_default, profile)
