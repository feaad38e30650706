"""`frugal operator`: run the operator against the cluster of the current kubeconfig (or in-cluster).

    frugal operator [--namespace NS ...] [--image IMAGE] [--storage-uri URI] [--pvc-root DIR]
                    [--metrics-port 8080] [--interval 10] [--kubeconfig FILE]

Exit codes: 0 after a clean stop, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frugal.operator.controller.pipeline import Settings


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="frugal operator", description="Run the frugal Kubernetes operator."
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--image",
        default=os.environ.get("FRUGAL_IMAGE", defaults.image),
        help="image of the compression Jobs, and of serving pods whose profile names none [FRUGAL_IMAGE]",
    )
    parser.add_argument(
        "--storage-uri",
        default=os.environ.get("FRUGAL_STORAGE_URI", defaults.storage_uri),
        help="artifact store for ModelDeployments without spec.storage.uri [FRUGAL_STORAGE_URI]",
    )
    parser.add_argument(
        "--pvc-root",
        type=Path,
        default=os.environ.get("FRUGAL_PVC_ROOT"),
        help="where this process sees pvc://<claim>/... as <dir>/<claim>/... [FRUGAL_PVC_ROOT]",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics (0: no metrics server)"
    )
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address the metrics server listens on")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between periodic re-reconciles")
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then KUBECONFIG)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("frugal operator: --interval must be greater than 0", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    settings = Settings(image=args.image, storage_uri=args.storage_uri, pvc_root=args.pvc_root)
    run(
        settings,
        namespaces=args.namespace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        interval=args.interval,
        kubeconfig=args.kubeconfig,
    )
    return 0


def run(
    settings: Settings,
    namespaces: Sequence[str] = (),
    metrics_port: int = 8080,
    metrics_host: str = "0.0.0.0",
    interval: float = 10.0,
    kubeconfig: str | None = None,
) -> None:
    """Run the operator until interrupted (blocking)."""
    import kopf

    from frugal.operator.controller import handlers, metrics
    from frugal.operator.controller.apply import Cluster
    from frugal.operator.controller.reconciler import Reconciler

    operator_metrics = metrics.OperatorMetrics()
    server = metrics.serve(operator_metrics, metrics_port, metrics_host) if metrics_port else None
    cluster = Cluster.from_kubeconfig(kubeconfig, on_request=operator_metrics.api_requests.inc)
    reconciler = Reconciler(cluster, settings, operator_metrics)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, reconciler, interval)
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(_configure)
    try:
        kopf.run(registry=registry, standalone=True, namespaces=list(namespaces), clusterwide=not namespaces)
    finally:
        if server is not None:
            server.shutdown()


def _configure(settings: Any, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's INFO logs stay logs
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


if __name__ == "__main__":
    sys.exit(main())
