"""The one layer that talks to the API server for children: server-side apply, get, list, delete.

Built on the `kubernetes` client's ApiClient (imported lazily) with a fixed field manager; bodies go
in and come out as plain dicts. 404 on get/delete is "absent", not an error. Every call is counted
so benchmarks can report API requests per reconcile.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.control.port import FIELD_MANAGER, ApiError

# (apiVersion, kind) -> (path prefix, plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs", True),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "Event"): ("/api/v1", "events", True),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("v1", "Secret"): ("/api/v1", "secrets", True),
    ("v1", "PersistentVolume"): ("/api/v1", "persistentvolumes", False),  # the node cache's, one per namespace
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims", True),  # read only: object-store keys (artifact_access)
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets", True),
    (API_VERSION, "ModelDeployment"): (f"/apis/{API_VERSION}", "modeldeployments", True),
    (API_VERSION, "HardwareProfile"): (f"/apis/{API_VERSION}", "hardwareprofiles", False),
    (API_VERSION, "BatchInference"): (f"/apis/{API_VERSION}", "batchinferences", True),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("/apis/monitoring.coreos.com/v1", "podmonitors", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases", True),
}


# Objects per list request: the operator's memory holds one page of whole objects at a time.
LIST_PAGE = 250
# Connections kept open to the API server: one for each thread that calls it (kopf's handlers, the
# periodic resync, the autoscaler, the leader's renewals), where the client's default (five per CPU)
# would close and reopen some.
API_CONNECTIONS = 32
# What the API server returns that the operator never reads: who wrote which field, and kopf's copy
# of the spec it last handled (each as large as the rest of a ModelDeployment).
UNREAD_ANNOTATIONS = ("kopf.zalando.org/last-handled-configuration",)


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without metadata.managedFields and the annotations no caller reads."""
    metadata = obj.get("metadata") or {}
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations") or {}
    for key in UNREAD_ANNOTATIONS:
        annotations.pop(key, None)
    return obj


class Cluster:
    """The control loops' port (:class:`~frugal.operator.control.port.ClusterPort`) on the API server,
    through one ApiClient."""

    def __init__(self, api_client: Any, on_request: Callable[[str], None] | None = None) -> None:
        self._api = api_client
        self._lock = threading.Lock()
        self._on_request = on_request
        self.requests = 0

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | None = None, on_request: Callable[[str], None] | None = None
    ) -> Cluster:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = API_CONNECTIONS
        return cls(client.ApiClient(configuration), on_request)

    def apply(self, obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply `obj` under `field_manager` (conflicts forced)."""
        path = self._path(
            obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]
        )
        query = [("fieldManager", field_manager), ("force", "true")]
        return self._call("PATCH", path, query, obj, "application/apply-patch+yaml")

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self._call("POST", self._path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj)

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT `obj` whole; with metadata.resourceVersion set, a 409 says someone wrote it since."""
        meta = obj["metadata"]
        return self._call("PUT", self._path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]), body=obj)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def find(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Every object of `kind` matching `selector`, each kept without what no caller reads (`slim`)."""
        return [item for page in self.pages(api_version, kind, namespace, selector) for item in page]

    def pages(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> Iterator[list[dict[str, Any]]]:
        """`find`'s objects, `LIST_PAGE` at a time (a list of thousands is never parsed at once)."""
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items()))] if selector else []
        path = self._path(api_version, kind, namespace)
        token = None
        while True:
            paging = [("limit", str(LIST_PAGE))] + ([("continue", token)] if token else [])
            page = self._call("GET", path, query + paging)
            token = (page.get("metadata") or {}).get("continue")
            yield [slim(item) for item in page.pop("items", None) or []]
            if not token:
                return

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        body = {"propagationPolicy": "Background"}
        try:
            self._call("DELETE", self._path(api_version, kind, namespace, name), body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in `group_version` (e.g. a CRD is installed)."""
        try:
            resources = self._call("GET", f"/apis/{group_version}").get("resources", [])
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in resources)

    def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = self._path(api_version, kind, namespace, name) + "/status"
        return self._call("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

    def _path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        prefix, plural, namespaced = RESOURCES[(api_version, kind)]
        path = (
            f"{prefix}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{prefix}/{plural}"
        )
        return f"{path}/{name}" if name else path

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        with self._lock:
            self.requests += 1
        if self._on_request is not None:
            self._on_request(method)
        response = self._api.call_api(*request)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiError(response.status, _message(data))
        decoded: dict[str, Any] = json.loads(data) if data else {}
        return decoded


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", data))
    except (ValueError, AttributeError):
        return repr(data)
