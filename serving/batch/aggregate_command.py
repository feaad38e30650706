"""`frugal batch-aggregate`: join a batch's finished shards into its predictions and summary.

Run once every worker has succeeded (see `frugal.serving.batch.engine`). The config is ``--config FILE``
or the JSON in ``$FRUGAL_BATCH_CONFIG``; the summary is printed as one JSON line on stdout. Exit
codes: 0 on success, 2 when shards are missing or the output holds a finished run (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from frugal.serving.batch.engine import BatchError, aggregate, config_from, summary_json
from frugal.serving.batch.worker_command import setup_logging
from frugal.storage.object_store import ObjectStoreError

PROG = "frugal batch-aggregate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="the batch config (JSON); default: $FRUGAL_BATCH_CONFIG"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the predictions of a finished run")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = config_from(args.config, os.environ, args.overwrite)
        summary = aggregate(config)
    except BatchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ObjectStoreError as exc:  # not refused: unreachable, a timeout, a failed run the Job retries
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(summary_json(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
