"""`frugal serve`: serve one variant of an artifact directory over the Open Inference Protocol v2.

Every flag can also come from an environment variable (FRUGAL_ + the flag in upper snake case, e.g.
`--max-batch-size` ↔ FRUGAL_MAX_BATCH_SIZE) so a pod template can set them; a flag wins over its
variable. Each setting (flag, variable, type, default, help) is declared once, as a field of
`ServeConfig` in serving/server/settings.py; this parser is derived from those fields. Exit codes: 0
after a clean shutdown; 2 for input it cannot use, on one line naming the flag to change (a bad
setting, a port in use, artifacts it cannot serve); 1 for a run that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from frugal.serving.server.settings import (
    ENV_PREFIX,
    SETTINGS,
    ServeConfig,
    add_arguments,
    env_name,
    missing,
    parse_labels,
)
from frugal.storage.object_store import ObjectStoreError

__all__ = ["ENV_PREFIX", "build_parser", "env_name", "main", "parse_config", "parse_labels"]


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    """`frugal serve`'s parser: one flag per `ServeConfig` setting (serving/server/settings.py)."""
    parser = argparse.ArgumentParser(
        prog="frugal serve",
        description="Serve one model variant over the Open Inference Protocol v2 (REST and gRPC).",
        epilog="Every flag may be set by its environment variable, e.g. FRUGAL_PORT=8080.",
    )
    add_arguments(parser, SETTINGS, environ)
    return parser


def parse_config(
    argv: Sequence[str] | None, environ: dict[str, str] | None = None
) -> tuple[ServeConfig, str]:
    """Flags + environment → (`ServeConfig`, its log level); exits 2 with a message naming the problem."""
    parser = build_parser(dict(os.environ if environ is None else environ))
    args = parser.parse_args(argv)
    absent = missing(args, SETTINGS)
    if absent:
        parser.error("missing " + " and ".join(f"{s.flag} (or {s.env})" for s in absent))
    config = ServeConfig(**vars(args))
    problems = config.problems()
    if problems:
        parser.error("; ".join(problems))
    return config, config.log_level


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is in frugal[serving]); the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    config, level = parse_config(argv)
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from frugal.serving.server.app import serve

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(serve(config))
    except ValueError as exc:  # a StartupError (a port in use, artifacts it cannot serve), an unknown
        print(f"frugal serve: {exc}", file=sys.stderr)  # execution provider, an unsplittable shard
        return 2
    except RuntimeError as exc:  # ONNX Runtime refusing the model file
        print(f"frugal serve: ONNX Runtime cannot load the variant: {exc}", file=sys.stderr)
        return 1
    except ObjectStoreError as exc:  # --artifacts s3://... unreachable or failing (a refusal is a ValueError)
        print(f"frugal serve: {exc}", file=sys.stderr)
        return 1
