"""`frugal serve`: serve one variant of an artifact directory over the Open Inference Protocol v2.

Every flag can also come from an environment variable (FRUGAL_ + the flag in upper snake case, e.g.
`--max-batch-size` ↔ FRUGAL_MAX_BATCH_SIZE) so a pod template can set them; a flag wins over its
variable. Exit codes: 0 after a clean shutdown, 2 for bad settings, 1 when the artifacts cannot be served.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugal.serving.server.settings import ServeConfig

ENV_PREFIX = "FRUGAL_"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` → dict; raises ValueError naming the bad item."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key.strip()] = value.strip()
    return labels


def optional_path(text: str) -> Path | None:
    """A path, or None for an empty value (an env var set to "" turns the setting off)."""
    return Path(text) if text.strip() else None


_FLAGS: list[tuple[str, Callable[[str], Any], Any, str]] = [
    ("--artifacts", Path, None, "artifact directory holding manifest.json (required)"),
    ("--variant", str, None, "variant name from the manifest, e.g. int8-dynamic (required)"),
    ("--model-name", str, None, "name in the OIP URLs (default: the manifest's model)"),
    ("--host", str, "127.0.0.1", "address to listen on (0.0.0.0 in a pod)"),
    ("--port", int, 8080, "port to listen on (0: any free port, printed when ready)"),
    ("--grpc-port", int, 8081, "OIP gRPC port (0: any free port, printed when ready; -1: off)"),
    ("--max-batch-size", int, 32, "most requests merged into one runtime execution"),
    ("--max-delay-ms", float, 2.0, "longest a request waits for companions under load"),
    ("--max-queue-size", int, 1024, "queued requests beyond which the server answers 429"),
    ("--request-timeout-ms", float, 30000.0, "per-request deadline (504 when passed)"),
    (
        "--max-body-bytes",
        int,
        0,
        "largest request body accepted, 413 beyond (0: derived from the model's inputs: 256 rows or the "
        "batch size, open dimensions at 512, as JSON; at least 1 MiB)",
    ),
    (
        "--latency-target-ms",
        float,
        None,
        "the latency SLO: answers slower than this are counted in frugal_requests_over_latency_target_total",
    ),
    (
        "--execution-provider",
        str,
        "CPUExecutionProvider",
        "CPUExecutionProvider, CUDAExecutionProvider or TensorrtExecutionProvider (falls back, logged)",
    ),
    ("--intra-op-threads", int, None, "ONNX Runtime threads (default: the cgroup CPU limit)"),
    ("--shard-index", int, 0, "this server's stage of the model, 0-based"),
    ("--shard-count", int, 1, "number of stages the model is cut into"),
    ("--next-stage", str, None, "base URL of the next stage's server (every shard but the last)"),
    ("--idle-watts", float, None, "hardware profile idle power, for the power estimate"),
    ("--max-watts", float, None, "hardware profile max power, for the power estimate"),
    ("--labels", parse_labels, {}, "metric labels k=v,...: namespace, hardware_profile"),
    ("--inline-below-ms", float, 0.5, "run batches faster than this on the event loop (0: never)"),
    ("--shutdown-grace-s", float, 0.0, "seconds to keep serving, unready, after SIGTERM"),
    (
        "--verify-cache-dir",
        optional_path,
        None,
        "writable directory remembering files already checked against the manifest, so an unchanged "
        "file is not hashed again on the next start (default: none, hash every start)",
    ),
    ("--log-level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
]


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal serve",
        description="Serve one model variant over the Open Inference Protocol v2 (REST and gRPC).",
        epilog="Every flag may be set by its environment variable, e.g. FRUGAL_PORT=8080.",
    )
    for flag, kind, default, text in _FLAGS:
        variable = env_name(flag)
        if variable in environ:
            try:
                default = kind(environ[variable])
            except ValueError as exc:
                parser.error(f"{variable}={environ[variable]!r}: {exc}")
        parser.add_argument(flag, type=kind, default=default, help=f"{text} [{variable}]")
    return parser


def parse_config(
    argv: Sequence[str] | None, environ: dict[str, str] | None = None
) -> tuple[ServeConfig, str]:
    """Flags + environment → `ServeConfig`; exits 2 with a message naming the problem."""
    from frugal.serving.server.settings import ServeConfig

    parser = build_parser(dict(os.environ if environ is None else environ))
    args = parser.parse_args(argv)
    missing = [
        f"--{name} (or {env_name(name)})" for name in ("artifacts", "variant") if getattr(args, name) is None
    ]
    if missing:
        parser.error("missing " + " and ".join(missing))
    values = {k: v for k, v in vars(args).items() if k != "log_level"}
    config = ServeConfig(**values)
    problems = config.problems()
    if problems:
        parser.error("; ".join(problems))
    return config, args.log_level


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
    from frugal.serving.server.artifacts import ArtifactError

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(serve(config))
    except ArtifactError as exc:
        print(f"frugal serve: cannot serve: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. an unknown execution provider, an unsplittable shard
        print(f"frugal serve: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ONNX Runtime refusing the model file
        print(f"frugal serve: ONNX Runtime cannot load the variant: {exc}", file=sys.stderr)
        return 1
