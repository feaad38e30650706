"""The flags and environment variables of `frugal operator` (see
:mod:`frugal.operator.cluster.operator_command`): parsed, merged (a flag wins over its variable, an
empty variable counts as unset) and checked into :class:`Options`, or an :class:`OptionError` naming the
flag or variable to change."""

from __future__ import annotations

import argparse
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import ValidationError

from frugal.operator.api.models import ObjectStore
from frugal.operator.cluster.leader import DEFAULT_LEASE_NAME, Timing
from frugal.operator.cluster.standby import HEALTH_PATH
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.manifests import images
from frugal.operator.manifests.storage import STORAGE_SCHEMES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_METRICS_PORT = 8000
DEFAULT_HEALTH_PORT = 8080
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Everything `frugal operator` runs with, after flags and environment are merged."""

    settings: Settings = field(default_factory=Settings)
    namespaces: tuple[str, ...] = ()
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_host: str = "0.0.0.0"
    health_port: int = DEFAULT_HEALTH_PORT
    interval: float = 10.0
    prometheus_url: str | None = None
    autoscale_interval: float = 15.0
    rate_window: str = "1m"
    kubeconfig: str | None = None
    log_level: str = "INFO"
    leader_election: bool = True
    lease_namespace: str | None = None  # None: no election (a single run outside a cluster)
    lease_name: str = DEFAULT_LEASE_NAME
    timing: Timing = field(default_factory=Timing)

    @property
    def elects(self) -> bool:
        """Whether replicas elect a leader: on, and a namespace for the Lease is known."""
        return self.leader_election and self.lease_namespace is not None

    @property
    def liveness_endpoint(self) -> str | None:
        """kopf's liveness URL (`/healthz` on the health port), or None when the port is 0."""
        if not self.health_port:
            return None
        host = f"[{self.metrics_host}]" if ":" in self.metrics_host else self.metrics_host
        return f"http://{host}:{self.health_port}{HEALTH_PATH}"


class OptionError(ValueError):
    """A flag or environment variable with a value the operator cannot use."""


# argparse dest -> the environment variable it defaults from (the names the Helm chart sets).
ENVIRONMENT = {
    "namespace": "FRUGAL_NAMESPACES",
    "workload_image": "FRUGAL_WORKLOAD_IMAGE",
    "serving_image": "FRUGAL_SERVING_IMAGE",
    "gpu_image": "FRUGAL_GPU_IMAGE",
    "front_placement": "FRUGAL_FRONT_PLACEMENT",
    "storage_uri": "FRUGAL_STORAGE_URI",
    "object_store": "FRUGAL_OBJECT_STORE",
    "allow_host_path": "FRUGAL_ALLOW_HOST_PATH",
    "node_cache_root": "FRUGAL_NODE_CACHE_ROOT",
    "network_policies": "FRUGAL_NETWORK_POLICIES",
    "monitoring_namespace": "FRUGAL_MONITORING_NAMESPACE",
    "pvc_root": "FRUGAL_PVC_ROOT",
    "metrics_port": "FRUGAL_METRICS_PORT",
    "metrics_host": "FRUGAL_METRICS_HOST",
    "health_port": "FRUGAL_HEALTH_PORT",
    "interval": "FRUGAL_INTERVAL",
    "prometheus_url": "FRUGAL_PROMETHEUS_URL",
    "autoscale_interval": "FRUGAL_AUTOSCALE_INTERVAL",
    "rate_window": "FRUGAL_RATE_WINDOW",
    "log_level": "FRUGAL_LOG_LEVEL",
    "leader_election": "FRUGAL_LEADER_ELECTION",
    "lease_namespace": "FRUGAL_LEASE_NAMESPACE",
    "lease_name": "FRUGAL_LEASE_NAME",
    "lease_duration": "FRUGAL_LEASE_DURATION",
    "renew_deadline": "FRUGAL_RENEW_DEADLINE",
    "retry_period": "FRUGAL_RETRY_PERIOD",
}
# The namespace of the Lease when neither --lease-namespace nor its variable is given: the pod's own
# (the chart sets it from the downward API).
POD_NAMESPACE = "POD_NAMESPACE"


def build_parser() -> argparse.ArgumentParser:
    """Flags only: every default is None so `resolve` can tell 'not given' from 'given'."""
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="frugal operator",
        description="Run the frugal Kubernetes operator. Each flag defaults from the environment "
        "variable named in brackets; a flag on the command line wins.",
    )

    def option(*flags: str, dest: str, metavar: str, help: str, default: object = None, **kw: Any) -> None:
        variable = ENVIRONMENT[dest] + (", a comma list" if dest == "namespace" else "")
        shown = "" if default is None else f"; default {default}"
        parser.add_argument(*flags, dest=dest, metavar=metavar, help=f"{help} [{variable}{shown}]", **kw)

    option("--namespace", "-n", dest="namespace", metavar="NS", action="append",
           help="watch only this namespace (repeatable, or a comma list); none: all namespaces")  # fmt: skip
    option("--workload-image", "--image", dest="workload_image", metavar="IMAGE", default=defaults.settings.image,
           help="the full image (the Containerfile's target full, with torch): compression Jobs")  # fmt: skip
    option("--serving-image", dest="serving_image", metavar="IMAGE",
           help="the serving image (target serving, no torch): serving pods, the front, profiling and batch "
           "Jobs whose HardwareProfile names no image; default: the workload image's tag + '-serving'")  # fmt: skip
    option("--gpu-image", dest="gpu_image", metavar="IMAGE",
           help="the gpu image (target gpu): every pod on an nvidia-gpu HardwareProfile that names no image; "
           "default: the workload image's tag + '-gpu'")  # fmt: skip
    option("--front-placement", dest="front_placement", metavar="JSON",
           help='nodeSelector and tolerations of scale-to-zero fronts, as {"nodeSelector": {...}, '
           '"tolerations": [...]}: the chart passes the operator pod\'s own, so fronts stay off the '
           "models' (GPU) pools")  # fmt: skip
    option("--storage-uri", dest="storage_uri", metavar="URI", default=defaults.settings.storage_uri,
           help="artifact store for ModelDeployments without spec.storage.uri (s3://, gs:// or "
           "az://<bucket>/<prefix>, pvc://<claim>/<path> or file:///<path>)")  # fmt: skip
    option("--object-store", dest="object_store", metavar="JSON",
           help="how pods and the operator reach s3://, gs:// and az:// URIs of ModelDeployments without "
           'spec.objectStore, as {"secretName": ..., "endpoint": ..., "region": ..., "addressingStyle": '
           '"auto|path|virtual", "project": ... (GCS), "accountName": ... (Azure)}; the Secret is looked up '
           "in each ModelDeployment's namespace")  # fmt: skip
    parser.add_argument("--allow-host-path", dest="allow_host_path", action="store_const", const="true",
                        help="accept file:// URIs in ModelDeployments and --storage-uri: a directory of the "
                        "node (hostPath, writable) or of the image. For a single-node development cluster "
                        f"only: anyone who may create a ModelDeployment could mount any node path "
                        f"[{ENVIRONMENT['allow_host_path']}=true; default off]")  # fmt: skip
    option("--node-cache-root", dest="node_cache_root", metavar="PATH",
           help="the nodes' model cache directory (the chart's modelCache.hostPath, where its DaemonSet runs "
           "frugal model-cache): serving pods share verified variants there through a claim per namespace; "
           "default: no node cache")  # fmt: skip
    parser.add_argument("--network-policies", dest="network_policies", action="store_const", const="true",
                        help="give every ModelDeployment's pods NetworkPolicies: serving reachable from its "
                        "namespace and the monitoring namespace, compression pods only from each other on the "
                        f"rendezvous port [{ENVIRONMENT['network_policies']}=true; default off]")  # fmt: skip
    option("--monitoring-namespace", dest="monitoring_namespace", metavar="NS",
           default=defaults.settings.monitoring_namespace,
           help="namespace whose pods (Prometheus) may scrape serving pods under --network-policies")  # fmt: skip
    option("--pvc-root", dest="pvc_root", metavar="DIR",
           help="directory where this process sees pvc://<claim>/<path> as DIR/<claim>/<path>; "
           "without it the operator cannot read pvc:// artifacts")  # fmt: skip
    option("--metrics-port", dest="metrics_port", metavar="PORT", default=defaults.metrics_port,
           help="port of the Prometheus /metrics endpoint (0: none)")  # fmt: skip
    option("--metrics-host", dest="metrics_host", metavar="HOST", default=defaults.metrics_host,
           help="address the metrics and health endpoints listen on")  # fmt: skip
    option("--health-port", dest="health_port", metavar="PORT", default=defaults.health_port,
           help=f"port of the liveness endpoint GET {HEALTH_PATH} (0: none)")  # fmt: skip
    option("--interval", dest="interval", metavar="SECONDS", default=defaults.interval,
           help="seconds between periodic passes over every ModelDeployment (settled ones cost nothing)")  # fmt: skip
    option("--prometheus-url", dest="prometheus_url", metavar="URL",
           help="Prometheus HTTP API the autoscaler reads for ModelDeployments without "
           "spec.autoscaling.prometheus.url, e.g. http://prometheus-operated.monitoring:9090")  # fmt: skip
    option("--autoscale-interval", dest="autoscale_interval", metavar="SECONDS", default=defaults.autoscale_interval,
           help="seconds between autoscaler ticks (one Prometheus query per metric for all models)")  # fmt: skip
    option("--rate-window", dest="rate_window", metavar="DURATION", default=defaults.rate_window,
           help="range of the autoscaler's rate() and histogram_quantile() queries; at least 4 scrape intervals")  # fmt: skip
    option("--log-level", dest="log_level", metavar="LEVEL", default=defaults.log_level,
           help=", ".join(LOG_LEVELS))  # fmt: skip
    parser.add_argument("--no-leader-election", dest="leader_election", action="store_const", const="false",
                        help="run as the only replica, without a Lease, even where a lease namespace is known "
                        f"[{ENVIRONMENT['leader_election']}=false; default on]")  # fmt: skip
    option("--lease-namespace", dest="lease_namespace", metavar="NS",
           help=f"namespace of the leader-election Lease; default ${POD_NAMESPACE} (the chart sets it), and "
           "without either no election: one replica only")  # fmt: skip
    option("--lease-name", dest="lease_name", metavar="NAME", default=defaults.lease_name,
           help="name of the leader-election Lease (coordination.k8s.io/v1)")  # fmt: skip
    option("--lease-duration", dest="lease_duration", metavar="SECONDS", default=defaults.timing.lease_duration_s,
           help="how long a standby waits after the leader's last renewal before taking over")  # fmt: skip
    option("--renew-deadline", dest="renew_deadline", metavar="SECONDS", default=defaults.timing.renew_deadline_s,
           help="a leader that has not renewed the Lease for this long exits (status 1); below --lease-duration")  # fmt: skip
    option("--retry-period", dest="retry_period", metavar="SECONDS", default=defaults.timing.retry_period_s,
           help="how often the leader renews and a standby tries; below --renew-deadline")  # fmt: skip
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig file [default: in-cluster config, then KUBECONFIG, then ~/.kube/config]",
    )
    return parser


Raw = tuple[str, Any] | None  # (where the value came from, the value) or None when neither was given


def settings_from(raw: Mapping[str, Raw]) -> Settings:
    """The operator's Settings from the merged flags and variables (`raw`: :func:`_pick` by argparse dest)."""
    defaults = Settings()
    image = _value(raw["workload_image"], str, defaults.image)
    storage_uri = _value(raw["storage_uri"], _storage_uri, defaults.storage_uri)
    pvc_root = _value(raw["pvc_root"], Path, defaults.pvc_root)
    serving_image = _value(raw["serving_image"], str, defaults.serving_image)
    gpu_image = _value(raw["gpu_image"], str, defaults.gpu_image)
    for target, given in (("serving", serving_image), ("gpu", gpu_image)):
        if not given:
            try:
                images.sibling(image, target)
            except ValueError as error:
                raise OptionError(str(error)) from None
    return Settings(
        image=image,
        serving_image=serving_image,
        gpu_image=gpu_image,
        front_placement=_value(raw["front_placement"], _placement, defaults.front_placement),
        storage_uri=storage_uri,
        pvc_root=pvc_root,
        object_store=_value(raw["object_store"], _object_store, defaults.object_store),
        allow_host_path=_value(raw["allow_host_path"], _boolean, defaults.allow_host_path),
        node_cache_root=_value(raw["node_cache_root"], _absolute_path, defaults.node_cache_root),
        network_policies=_value(raw["network_policies"], _boolean, defaults.network_policies),
        monitoring_namespace=_value(raw["monitoring_namespace"], _namespace, defaults.monitoring_namespace),
    )


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> Options:
    """Merge parsed flags with `environ` (flags win); raise OptionError naming the flag or variable."""
    defaults = Options()
    raw = {dest: _pick(args, environ, dest) for dest in ENVIRONMENT}
    return Options(
        settings=settings_from(raw),
        namespaces=_value(raw["namespace"], _namespaces, ()),
        metrics_port=_value(raw["metrics_port"], _port, defaults.metrics_port),
        metrics_host=_value(raw["metrics_host"], str, defaults.metrics_host),
        health_port=_value(raw["health_port"], _port, defaults.health_port),
        interval=_value(raw["interval"], _positive, defaults.interval),
        prometheus_url=_value(raw["prometheus_url"], _http_url, None),
        autoscale_interval=_value(raw["autoscale_interval"], _positive, defaults.autoscale_interval),
        rate_window=_value(raw["rate_window"], _duration, defaults.rate_window),
        kubeconfig=args.kubeconfig,
        log_level=_value(raw["log_level"], _log_level, defaults.log_level),
        leader_election=_value(raw["leader_election"], _boolean, defaults.leader_election),
        lease_namespace=_lease_namespace(raw["lease_namespace"], environ),
        lease_name=_value(raw["lease_name"], _dns_label, defaults.lease_name),
        timing=_timing(raw),
    )


def _lease_namespace(raw: Raw, environ: Mapping[str, str]) -> str | None:
    if raw is None and environ.get(POD_NAMESPACE, "").strip():
        raw = (POD_NAMESPACE, environ[POD_NAMESPACE])
    return _value(raw, _namespace, None)


TIMING_DESTS = ("lease_duration", "renew_deadline", "retry_period")


def _timing(raw: Mapping[str, Raw]) -> Timing:
    defaults = Timing()
    timing = Timing(
        lease_duration_s=_value(raw["lease_duration"], _positive, defaults.lease_duration_s),
        renew_deadline_s=_value(raw["renew_deadline"], _positive, defaults.renew_deadline_s),
        retry_period_s=_value(raw["retry_period"], _positive, defaults.retry_period_s),
    )
    if problem := timing.problem():
        given = [f"{source}={text}" for source, text in filter(None, (raw[d] for d in TIMING_DESTS))]
        shown = f"{timing.retry_period_s:g} < {timing.renew_deadline_s:g} < {timing.lease_duration_s:g} s"
        raise OptionError(f"{', '.join(given) or 'the defaults'}: {problem} (not {shown})")
    return timing


def _pick(args: argparse.Namespace, environ: Mapping[str, str], dest: str) -> Raw:
    given = getattr(args, dest)
    if given is not None:
        flag = "--" + dest.replace("_", "-")
        return (flag, ",".join(given) if isinstance(given, list) else given)
    variable = ENVIRONMENT[dest]
    if environ.get(variable, "").strip():
        return (variable, environ[variable])
    return None


def _placement(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(value, dict) or set(value) - {"nodeSelector", "tolerations"}:
        raise ValueError('expected {"nodeSelector": {...}, "tolerations": [...]}')
    if not isinstance(value.get("nodeSelector", {}), dict) or not isinstance(value.get("tolerations", []), list):
        raise ValueError("nodeSelector must be a mapping and tolerations a list")
    return {key: item for key, item in value.items() if item}


def _absolute_path(text: str) -> str:
    path = posixpath.normpath(text)
    if not text.startswith("/") or ".." in text.split("/"):
        raise ValueError("expected an absolute path without '..' segments, e.g. /var/lib/frugal/model-cache")
    return path


def _object_store(text: str) -> ObjectStore | None:
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(
            'expected {"secretName": ..., "endpoint": ..., "region": ..., "addressingStyle": ..., '
            '"project": ..., "accountName": ...}'
        )
    try:
        return ObjectStore.model_validate({"addressingStyle": "auto", **value})
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def _namespace(text: str) -> str:
    name = text.strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError("not a namespace name (lowercase letters, digits and '-', at most 63)")
    return name


def _dns_label(text: str) -> str:
    name = text.strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError("not a DNS label (lowercase letters, digits and '-', at most 63)")
    return name


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _value(raw: Raw, convert: Callable[[str], T], default: T) -> T:
    if raw is None:
        return default
    source, text = raw
    try:
        return convert(text)
    except ValueError as error:
        raise OptionError(f"{source}={text!r}: {error}") from None


def _namespaces(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError("name at least one namespace, or leave it unset to watch all namespaces")
    return names


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError("not a port number: use 1-65535, or 0 to turn the endpoint off") from None
    if not 0 <= port <= 65535:
        raise ValueError("out of range: use 1-65535, or 0 to turn the endpoint off")
    return port


def _positive(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not seconds > 0:
        raise ValueError("must be greater than 0 seconds")
    return seconds


def _duration(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*(s|m|h)", text.strip()):
        raise ValueError("use a Prometheus duration such as 30s, 1m or 5m")
    return text.strip()


def _http_url(text: str) -> str:
    parsed = urlparse(text.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("use the Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090")
    return text.strip().rstrip("/")


def _storage_uri(text: str) -> str:
    if urlparse(text.strip()).scheme not in STORAGE_SCHEMES:
        raise ValueError("use s3://, gs:// or az://<bucket>/<prefix>, pvc://<claim>/<path> or file:///<path>")
    return text.strip()


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
    return level


