"""What the control loops need of a cluster, and nothing more.

:class:`ClusterPort` is the API server as the loops use it: objects are plain dicts, an absent object
is ``None`` (never an exception), a refusal is :class:`ApiError` with the HTTP status the API server
would answer. :class:`MetricsSource` answers the autoscaler's question — every shard's rates,
latency and power, and the requests held at zero — per metrics source, or why it could not.
Implemented by :mod:`frugal.operator.cluster` (the Kubernetes API, Prometheus) and by
:mod:`frugal.operator.local` (`frugal up`'s in-memory store, the replicas' own ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from frugal.operator.decision import observations

FIELD_MANAGER = "frugal-operator"
# The autoscaler owns spec.replicas of serving Deployments under its own manager; the operator's applies
# never carry the field, so the two never fight over it.
AUTOSCALER_FIELD_MANAGER = "frugal-autoscaler"

SERVING_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"))
JOB_KINDS = (("batch/v1", "Job"), ("v1", "Service"))
POLICY_KINDS = (("networking.k8s.io/v1", "NetworkPolicy"),)  # one set per ModelDeployment, not per generation


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"API server answered {status}: {message}")
        self.status = status


class ClusterPort(Protocol):
    """The API server, as the control loops call it."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def find(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]: ...

    def pages(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> Iterator[list[dict[str, Any]]]:
        """What `find` returns, a page at a time: a caller that keeps only what it reads of each
        object never holds thousands of them."""
        ...

    def apply(self, obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply under `field_manager`: the fields it sends become its own."""
        ...

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool: ...

    def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (``None`` removes a field)."""
        ...

    def has_api(self, group_version: str, plural: str) -> bool: ...


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the API server could not be reached or is not answering yet (a
    connection refused or reset, a timeout, 5xx): nothing this process did wrong."""
    if isinstance(error, ApiError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, OSError) or type(error).__module__.split(".")[0] == "urllib3"


def delete_all(
    cluster: ClusterPort,
    kinds: Iterable[tuple[str, str]],
    namespace: str,
    selector: Mapping[str, str],
    keep: Mapping[str, str] | None = None,
) -> int:
    """Delete every object of `kinds` matching `selector`, except those whose labels match `keep`."""
    deleted = 0
    for api_version, kind in kinds:
        for item in cluster.find(api_version, kind, namespace, selector):
            labels = item["metadata"].get("labels") or {}
            if keep and all(labels.get(k) == v for k, v in keep.items()):
                continue
            deleted += cluster.delete(api_version, kind, namespace, item["metadata"]["name"])
    return deleted


# Where a ModelDeployment's metrics come from: (Prometheus URL, or "" for none; power source).
MetricsKey = tuple[str, str]


@dataclass(frozen=True)
class MetricsReading:
    """One read of every metrics source the autoscaler needs this tick."""

    samples: Mapping[MetricsKey, Mapping[observations.Key, observations.ShardSample]] = field(
        default_factory=dict
    )
    # Sources that could not be read, and why (the query and the server's answer).
    failures: Mapping[MetricsKey, str] = field(default_factory=dict)
    # Requests the scale-to-zero fronts hold, per source and (namespace, model).
    held: Mapping[MetricsKey, Mapping[tuple[str, str], float]] = field(default_factory=dict)


class MetricsSource(Protocol):
    def read(self, wanted: Sequence[MetricsKey]) -> MetricsReading: ...
