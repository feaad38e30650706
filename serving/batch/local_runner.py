"""Run a batch on this machine: N `frugal batch-worker` processes, restarted when they die, then the
aggregation (see `frugal.serving.batch.engine`).

The workers are the very command a Kubernetes Indexed Job runs (``python -m
frugal.serving.batch.worker_command``), one process per index, so a local run exercises what a cluster runs.
A worker that dies (a non-zero exit other than 2, or a signal) is started again with the same index
and resumes: its finished shards have markers and are skipped. Exit 2 is a batch that cannot run as
asked (bad input, say) and would fail again, so it stops the run instead. Progress is a bar over
the shards whose markers exist.

    python -m frugal.serving.batch.local_runner --config batch.json --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from frugal.serving.batch import output_dir
from frugal.serving.batch.engine import (
    BatchConfig,
    BatchError,
    Summary,
    aggregate,
    check,
    config_from,
    summary_json,
)

WORKER_MODULE = "frugal.serving.batch.worker_command"  # what `frugal batch-worker` delegates to
USER_ERROR = 2
POLL_S = 0.2
STOP_GRACE_S = 5.0

Progress = Callable[[int, int], None]  # (shards done, shards in all)


@dataclass
class _Worker:
    index: int
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    deaths: list[int] = field(default_factory=list)  # exit codes of earlier attempts (negative: signal)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    def last_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"


def default_threads(config: BatchConfig, workers: int) -> int:
    """ONNX Runtime threads per worker: the machine's CPUs shared out, unless the config says."""
    from frugal.serving.server.runtime import read_cpu_limit

    return config.intra_op_threads or max(1, read_cpu_limit() // workers)


def run_local(
    config: BatchConfig, workers: int, retries: int = 2, progress: bool | Progress = True
) -> Summary:
    """Score the batch with `workers` local worker processes, each restarted up to `retries` times
    when it dies, then aggregate. `progress`: True for a bar on stderr, False for none, or a callback.
    Raises BatchError (the run's checks, a worker's one-line error, or a worker out of retries)."""
    if workers < 1 or retries < 0:
        raise BatchError("workers must be at least 1 and retries at least 0")
    run = check(config)  # fail here, once, before any process starts; settles the output
    threads = default_threads(config, workers)
    settled = config.model_copy(update={"intra_op_threads": threads, "overwrite": False})
    with tempfile.TemporaryDirectory(prefix="frugal-batch-") as scratch:
        config_file = Path(scratch) / "batch.json"
        config_file.write_text(settled.model_dump_json(by_alias=True))
        pool = [
            _Worker(i, _worker_argv(config_file, i, workers), Path(scratch) / f"worker-{i}.log")
            for i in range(workers)
        ]
        with _reporter(progress, len(run.shards)) as report:
            _supervise(pool, retries, lambda: report(_done(run.layout), len(run.shards)))
    return aggregate(settled)


def _worker_argv(config_file: Path, index: int, count: int) -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE, "--config", str(config_file), "--index", str(index),
            "--count", str(count)]  # fmt: skip


def _done(layout: output_dir.Layout) -> int:
    with contextlib.suppress(OSError):  # a bucket's failure too: the progress bar waits for the next tick
        return len(output_dir.marker_paths(layout))
    return 0


def _supervise(pool: Sequence[_Worker], retries: int, tick: Callable[[], None]) -> None:
    """Start every worker, restart the ones that die, return when all have succeeded."""
    for worker in pool:
        worker.start()
    running = list(pool)
    try:
        while running:
            time.sleep(POLL_S)
            tick()
            running = [w for w in running if not _finished(w, retries)]
        tick()
    finally:
        _stop(pool)


def _finished(worker: _Worker, retries: int) -> bool:
    """Whether `worker` succeeded; restarts it when it died and has retries left (raises when not)."""
    assert worker.process is not None
    code = worker.process.poll()
    if code is None:
        return False
    if code == 0:
        return True
    if code == USER_ERROR:
        raise BatchError(worker.last_line().removeprefix("frugal batch-worker: error: "))
    worker.deaths.append(code)
    if len(worker.deaths) > retries:
        how = ", ".join(f"signal {-c}" if c < 0 else f"exit {c}" for c in worker.deaths)
        raise BatchError(
            f"worker {worker.index} died {len(worker.deaths)} times ({how}; last line: {worker.last_line()}); "
            "its finished shards are kept: run the batch again to resume"
        )
    worker.start()
    return False


def _stop(pool: Sequence[_Worker]) -> None:
    """Stop the workers still running (an error elsewhere, or Ctrl-C): SIGTERM, then SIGKILL."""
    alive = [w.process for w in pool if w.process is not None and w.process.poll() is None]
    for process in alive:
        process.terminate()
    for process in alive:
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _reporter(progress: bool | Progress, total: int) -> Iterator[Progress]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("shards"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Bar(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("shards", total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m frugal.serving.batch.local_runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the batch config (JSON); default: $FRUGAL_BATCH_CONFIG"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--retries", type=int, default=2, help="restarts per worker (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in the output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = config_from(args.config, os.environ, args.overwrite)
        summary = run_local(config, args.workers, args.retries, progress=not args.no_progress)
    except BatchError as exc:
        print(f"batch: error: {exc}", file=sys.stderr)
        return USER_ERROR
    print(summary_json(summary), file=stdout or sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
