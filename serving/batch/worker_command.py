"""`frugal batch-worker`: score this worker's shards of a batch (see `frugal.serving.batch.engine`).

Worker ``--index I`` of ``--count N`` takes shards ``I, I+N, ...``; the index defaults to
``$JOB_COMPLETION_INDEX``, which Kubernetes sets in an Indexed Job's pods, so every pod of the Job
runs the same command. The config is ``--config FILE`` or the JSON in ``$FRUGAL_BATCH_CONFIG``.
Exit codes: 0 when every shard of this worker is done, 2 for a batch that cannot run as asked (one
line on stderr, e.g. a bad input or an output that exists); anything else is a crash to retry.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from frugal.serving.batch.engine import BatchError, config_from, run_worker
from frugal.storage.object_store import ObjectStoreError

INDEX_ENV = "JOB_COMPLETION_INDEX"
PROG = "frugal batch-worker"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="the batch config (JSON); default: $FRUGAL_BATCH_CONFIG"
    )
    parser.add_argument(
        "--index", type=int, default=None, help=f"this worker's index (default: ${INDEX_ENV}, else 0)"
    )
    parser.add_argument("--count", type=int, default=1, help="the number of workers (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in the output")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def worker_index(given: int | None, environ: Mapping[str, str]) -> int:
    """The flag, else the Indexed Job's completion index, else 0."""
    if given is not None:
        return given
    text = environ.get(INDEX_ENV, "").strip()
    try:
        return int(text) if text else 0
    except ValueError:
        raise BatchError(f"${INDEX_ENV}={text!r} is not a worker index") from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = config_from(args.config, os.environ, args.overwrite)
        result = run_worker(config, worker_index(args.index, os.environ), args.count)
    except BatchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ObjectStoreError as exc:  # not refused: unreachable, a timeout, a failed run the Job retries
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("frugal.serving.batch").info(
        "worker %d of %d: %d shard(s), %d computed (%d rows in %.2f s), %d done before",
        result.index, result.count, result.shards, result.computed, result.rows, result.seconds, result.skipped,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
