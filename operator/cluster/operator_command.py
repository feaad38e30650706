"""`frugal operator`: run the operator against the cluster of the current kubeconfig (or in-cluster).

    frugal operator [--namespace NS ...] [--workload-image IMAGE] [--storage-uri URI] [--pvc-root DIR]
                    [--metrics-port 8000] [--health-port 8080] [--interval 10] [--kubeconfig FILE]
                    [--prometheus-url URL] [--autoscale-interval 15]
                    [--lease-namespace NS] [--lease-name NAME] [--no-leader-election]
                    [--lease-duration 15] [--renew-deadline 10] [--retry-period 2]

With a lease namespace (--lease-namespace, else POD_NAMESPACE, which the chart sets from the downward
API) replicas elect a leader on the Lease NAME there (`frugal.operator.cluster.leader`): a standby
answers its liveness URL and waits; only the leader runs kopf's handlers and the autoscaler. A leader
that cannot renew within the renew deadline exits at once with status 1 (its pod restarts as a
standby); on SIGTERM it stops and releases the Lease so a standby takes over within a retry period.

Every flag has an environment variable (the Helm chart sets them); a flag given on the command line
wins over its variable, and an empty variable counts as unset. Exit codes: 0 after a clean stop,
1 when leadership is lost, 2 for a bad flag or variable, or one it cannot start with (a port in use, a
kubeconfig that does not load), printed on one line naming the flag to change.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from frugal.operator.cluster import leader, standby
from frugal.operator.cluster.operator_options import (
    ENVIRONMENT,
    POD_NAMESPACE,
    OptionError,
    Options,
    build_parser,
    resolve,
    settings_from,
)
from frugal.serving.server.failures import one_line
from frugal.serving.server.settings import StartupError, cannot_listen, port_in_use

if TYPE_CHECKING:
    import threading

    from frugal.operator.cluster.apply import Cluster
    from frugal.operator.telemetry import OperatorMetrics

__all__ = ["ENVIRONMENT", "POD_NAMESPACE", "OptionError", "Options", "build_parser", "main", "resolve", "run",
           "settings_from"]  # fmt: skip

# What the leader runs (kopf and the control loops), imported before standing by.
LEADER_MODULES = (
    "kopf",
    "frugal.operator.cluster.handlers",
    "frugal.operator.cluster.prometheus",
    "frugal.operator.control.batch_reconciler",
    "frugal.operator.control.reconciler",
    "frugal.operator.control.scaler",
)

def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        options = resolve(parser.parse_args(argv), os.environ)
    except OptionError as error:
        print(f"frugal operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, options.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if options.kubeconfig:
        os.environ["KUBECONFIG"] = options.kubeconfig
    try:
        run(options)
    except StartupError as error:
        print(f"frugal operator: {error}", file=sys.stderr)
        return 2
    return 0


def run(options: Options) -> None:
    """Run the operator until interrupted (blocking). With election, stand by until this process holds
    the Lease; only then start kopf and the autoscaler."""
    import importlib
    import threading

    from frugal.operator import telemetry as metrics
    from frugal.operator.cluster import memory

    memory.keep_large_buffers_out_of_the_heap()
    operator_metrics = metrics.OperatorMetrics()
    cluster = _cluster(options.kubeconfig, operator_metrics.count_request)
    if options.health_port and (in_use := port_in_use(options.metrics_host, options.health_port)):
        raise cannot_listen(options.metrics_host, options.health_port, "--health-port", in_use)
    server = None
    if options.metrics_port:
        try:
            server = metrics.serve(operator_metrics, options.metrics_port, options.metrics_host)
        except OSError as exc:
            raise cannot_listen(options.metrics_host, options.metrics_port, "--metrics-port", exc) from None
    stop = threading.Event()
    memory.trim_periodically(stop)
    elector = None
    for module in LEADER_MODULES:  # before standing by: a new leader starts reconciling at once
        importlib.import_module(module)
    try:
        if options.elects:
            # Its own client, uncounted: frugal_operator_api_*_total stay the reconcilers' traffic.
            elector = _elector(options, _cluster(options.kubeconfig, lambda _method: None))
            health = (options.metrics_host, options.health_port) if options.health_port else None
            if not standby.stand_by(elector, stop, health):
                return
        operator_metrics.leader.set(1)
        _lead(cluster, options, operator_metrics, stop, elector)
    finally:
        stop.set()
        operator_metrics.leader.set(0)
        if server is not None:
            server.shutdown()


def _lead(
    cluster: Cluster,
    options: Options,
    operator_metrics: OperatorMetrics,
    stop: threading.Event,
    elector: leader.Elector | None,
) -> None:
    """kopf's handlers and the autoscaler, until kopf stops (SIGTERM, SIGINT); then release the Lease."""
    import threading

    import kopf

    from frugal.operator.cluster import handlers
    from frugal.operator.cluster.prometheus import PrometheusMetrics
    from frugal.operator.control.batch_reconciler import BatchReconciler
    from frugal.operator.control.reconciler import Reconciler
    from frugal.operator.control.scaler import Autoscaler

    keeping = [] if elector is None else elector.keep(stop, lambda: standby.lost(elector))
    writers: list[threading.Thread] = []  # the autoscaler's ticks and the periodic resync
    try:
        reconciler = Reconciler(cluster, options.settings, operator_metrics)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, reconciler, BatchReconciler(cluster, reconciler))
        prometheus = PrometheusMetrics(options.rate_window, on_query=operator_metrics.prometheus_queries.inc)
        autoscaler = Autoscaler(
            cluster,
            reconciler,
            prometheus,
            options.prometheus_url,
            operator_metrics,
            options.rate_window,
            options.namespaces,
        )
        writers = [
            threading.Thread(
                target=autoscaler.run, args=(options.autoscale_interval, stop), name="autoscaler", daemon=True
            ),
            threading.Thread(target=reconciler.run, args=(options.interval, stop), name="reconcile", daemon=True),
        ]
        for thread in writers:
            thread.start()
        kopf.on.login(registry=registry)(kopf.login_via_client)
        kopf.on.startup(registry=registry)(_configure)
        kopf.run(
            registry=registry,
            standalone=True,
            namespaces=list(options.namespaces),
            clusterwide=not options.namespaces,
            liveness_endpoint=options.liveness_endpoint,
        )
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=10)
        for thread in keeping:
            thread.join(timeout=options.timing.retry_period_s + 5)
        # Hand over only once nothing of ours writes any more; else let the Lease expire.
        if elector is not None and not any(t.is_alive() for t in [*keeping, *writers]):
            elector.release()


def _elector(options: Options, cluster: Cluster) -> leader.Elector:
    namespace = options.lease_namespace
    assert namespace is not None
    return leader.Elector(cluster, namespace, options.lease_name, leader.new_identity(), options.timing)


def _cluster(kubeconfig: str | None, on_request: Callable[[str], None]) -> Cluster:
    """The API client of the in-cluster config, else of the kubeconfig; `StartupError` when neither loads."""
    import yaml
    from kubernetes.config import ConfigException

    from frugal.operator.cluster.apply import Cluster

    if kubeconfig and not os.access(kubeconfig, os.R_OK):
        raise StartupError(f"cannot read the kubeconfig {kubeconfig}", "--kubeconfig")
    try:
        return Cluster.from_kubeconfig(kubeconfig, on_request=on_request)
    except (ConfigException, OSError, yaml.YAMLError) as exc:
        why = one_line(exc).rstrip(".")
        problem = f"the kubeconfig {kubeconfig}: {why}" if kubeconfig else f"no in-cluster config nor kubeconfig ({why})"
        remedy = None if kubeconfig else "pass --kubeconfig FILE"
        raise StartupError(problem, "--kubeconfig", remedy) from None


def _configure(settings: Any, **_: Any) -> None:
    from frugal.operator.cluster.apply import LIST_PAGE

    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's INFO logs stay logs
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Memory at thousands of objects: kopf lists each kind a page at a time (else all at once, when it
    # starts), and its worker per object, which keeps that object's last body, exits 0.5 s after the
    # object goes quiet (else 5 s: after a start's listing, every body at once).
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = 0.5


if __name__ == "__main__":
    sys.exit(main())
