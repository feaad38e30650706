"""Cold-start benchmark: time to the first answer of a replica waking from zero, with `frugal serve`'s
verify cache cold (every file hashed against the manifest) and warm (unchanged files trusted).

A wake from zero is measured from spawning the operator's serve command (``container_commands.serve``,
as the serving Deployment runs it, on localhost) until the first Open Inference Protocol infer request
through shard 0 returns 200. Whole models run one ``frugal serve``; two shards run two, started at the
same moment, shard 0 with ``--next-stage`` pointing at shard 1. Each server gets its own verify cache
directory (as each pod has its own emptyDir): "cold" is an empty directory, "warm" the same directory
again after the cold start filled it — a container restart in a pod.

The request is the example's first two held-out inputs in one request (two rows, MiniLM's padded
to the longer sentence). A sharded start loads each stage's own file, which compression cut for the
example with ``spec.serving.shards`` covering ``--shards`` (cached beside the example's own).

The breakdown is what the servers expose: spawn → ready (every shard has printed
``frugal serve: ready on ...``, which follows verification, the ONNX Runtime session and warm-up),
ready → first answer (the first infer, sent the moment the last shard is ready), and the time the
servers spent verifying (their ``verified variant ...`` log line; for two shards the slower one). The
sha256 of the variant's files is also timed on its own with hashlib. Artifacts come from the example's
compression Job (``frugal compress`` with the operator's config for ``examples/<model>.yaml``, cached
under ``~/.cache/frugal/benchmarks/autoscaling/<model>``, shared with ``benchmarks/autoscaling.py``);
the variant is the one the planner chose there (its stored measurement), or ``--variant``.

Before the timed wakes of each row one start is made and discarded (it pulls the Python libraries
into the page cache), and cold and warm alternate which goes first. Each server is pinned to one CPU
(a 1-CPU pod: the server derives one intra-op thread from its affinity as it would from a cgroup
limit); the two shards get different CPUs where there are two.
The artifact files are in the page cache in every run unless ``--evict-page-cache`` drops them
(``posix_fadvise(DONTNEED)``) before each start, as on a node that has not read them yet.

``--source`` says where the artifacts come from. ``local``: the directory on this disk, as a pod's
claim mounts it. ``bucket``: ``s3://`` in a real S3 server on loopback (SeaweedFS's
S3 gateway, ``tests/s3_harness.py``; the variant's files and ``manifest.json`` published there with
``object_store.publish``), served with the keys and ``FSSPEC_S3`` in the environment as a pod gets
them, and a fresh empty ``--fetch-dir`` and verify cache per start: a new pod, which fetches, verifies
and loads. ``bucket-refetch``: the same URI with the fetch directory and verify cache kept from an
earlier start: a container restart in the same pod (both are emptyDirs), which downloads nothing but
``manifest.json``. Its fetch directory is filled by a discarded start, and discarded starts follow
until the verify cache has recorded the download (it does once the file is older than its racy
window, ``artifacts.RACY_WINDOW_S``). Bucket rows are compared with the local row of the same verify cache
(``bucket`` with ``cold``, ``bucket-refetch`` with ``warm``); "fetch" is the server's own
``fetched N file(s), B bytes from ... in S s`` line (10 ms resolution). With ``--evict-page-cache`` the
S3 server's data files and the kept fetch directories are evicted too. ``node-cache``: a new pod (the
bucket's URI, a fresh fetch directory and verify cache) on a node whose model cache already holds the
variant (``--node-cache ROOT``, filled once before the timed starts: ``cold_start_node_cache.py``), which
fetches only ``manifest.json`` and hashes nothing; compared with ``bucket`` (a new pod without the cache)
and the local cold row; "from the node cache" is the server's ``... from the node cache at ... in X ms``
line (reading the manifest from the bucket and the lookup). With ``--evict-page-cache`` the cache entry's
files are evicted too (a cache filled long ago). By default all four sources run when the S3 server
starts, ``local`` alone (with a warning) when it cannot.

    python benchmarks/cold_start.py                          # digits + MiniLM, 1 and 2 shards, 5 repeats
    python benchmarks/cold_start.py --model minilm --shards 2 --repeat 3 --json
    python benchmarks/cold_start.py --model digits --shards 1 --source local bucket node-cache
    python benchmarks/cold_start.py --smoke                  # seconds: digits, 1 and 2 shards, 1 wake
                                                             # (the bucket sources at 1 shard only)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoscaling  # the examples, their cached compression and the machine description
import cold_start_node_cache as node_cache
from cold_start_bucket import Bucket, s3_bucket
from cold_start_report import SOURCES, hashing_lines, table

from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.manifests import container_commands
from frugal.schema.artifact_format import sha256_file
from frugal.serving.server import artifacts

REPO_ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"ready on (http://[\d.]+:\d+)")
VERIFIED = re.compile(
    r"verified variant '[^']+': (\d+) file\(s\), (\d+) bytes in ([\d.]+) ms; (\d+) hashed in ([\d.]+) ms, "
    r"(\d+) trusted"
)
FETCHED = re.compile(
    r"fetched (\d+) file\(s\), (\d+) bytes from \S+ into .* in ([\d.]+) s; (\d+) already there"
)
TIMEOUT_S = 180.0
PRIMING_STARTS = 20  # about 0.7 s each: the racy window (2 s) is passed within a few


@dataclass
class Start:
    """One wake from zero."""

    model: str
    shards: int
    cache: str  # "cold" or "warm"
    ready_s: float  # spawn → every shard ready
    first_answer_s: float  # spawn → the first infer answered 200
    attempts: int  # infer requests sent until one answered 200
    verify_s: float  # the slowest shard's verification (its log line)
    hash_s: float  # of which hashing
    hashed: int  # files hashed, all shards
    trusted: int  # files trusted from the verify cache, all shards
    source: str = "local"  # "local", "bucket", "bucket-refetch" or "node-cache"
    fetch_s: float | None = None  # the slowest shard's fetch (its log line); None from a local directory
    fetched: int = 0  # files downloaded, all shards (manifest.json not counted)
    fetched_bytes: int = 0
    kept: int = 0  # files already in the fetch directory, all shards
    cached: int = 0  # files loaded from the node cache (neither fetched nor hashed), all shards
    cache_s: float | None = None  # the slowest shard's "from the node cache" line; None without the cache

    @property
    def ready_to_answer_s(self) -> float:
        return self.first_answer_s - self.ready_s


def _local(argv: Sequence[str]) -> list[str]:
    """A container command run on this machine: this venv's `frugal` and `python`."""
    head = {"frugal": str(Path(sys.executable).with_name("frugal")), "python": sys.executable}
    return [head.get(argv[0], argv[0]), *argv[1:]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cpus(shards: int) -> list[int | None]:
    """One CPU per server, leaving the first to this process where there are enough."""
    if shutil.which("taskset") is None:
        return [None] * shards
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[(1 + i) % len(cpus)] for i in range(shards)]


def serve_commands(
    md: ModelDeploymentSpec,
    artifacts_at: str,
    variant: str,
    shards: int,
    caches: Sequence[Path],
    fetch_dirs: Sequence[Path] | None = None,
    node_cache_root: Path | None = None,
) -> list[list[str]]:
    """The operator's serve command for each shard, on loopback ports, with its verify cache (and, for
    an ``s3://`` `artifacts_at`, its own fetch directory, as each pod has its own /tmp; and the node's
    model cache when given)."""
    ports = [_free_port() for _ in range(shards)]
    commands = []
    for index, (cpu, cache) in enumerate(zip(server_cpus(shards), caches, strict=True)):
        following = f"http://127.0.0.1:{ports[index + 1]}" if index + 1 < shards else None
        argv = _local(container_commands.serve(md, artifacts_at, variant, index, shards, following))
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(ports[index])
        # Every pod has 8081 to itself; processes here share loopback: any free port (the server prints it).
        argv[argv.index("--grpc-port") + 1] = "0"
        argv += ["--verify-cache-dir", str(cache)]
        if fetch_dirs is not None:
            argv += ["--fetch-dir", str(fetch_dirs[index])]
        if node_cache_root is not None:
            argv += ["--node-cache", str(node_cache_root)]
        commands.append(argv if cpu is None else ["taskset", "-c", str(cpu), *argv])
    return commands


class Process:
    """A started server: when it said it was ready, and its log."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
        )
        self.ready_at: float | None = None
        self.url: str | None = None
        self.ready = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._stdout, daemon=True).start()
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()

    def _stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in iter(self.popen.stdout.readline, ""):
            match = READY.search(line)
            if match and self.ready_at is None:
                self.ready_at = time.perf_counter()
                self.url = match.group(1)
                self.ready.set()
        self.ready.set()  # exited

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        self.log.extend(iter(self.popen.stderr.readline, ""))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._stderr.join(10)

    def verification(self) -> tuple[float, float, int, int]:
        """(verify seconds, hash seconds, files hashed, files trusted) from the server's log line."""
        match = VERIFIED.search("".join(self.log))
        if match is None:
            raise RuntimeError(f"no verification line in the server's log:\n{''.join(self.log)[-3000:]}")
        ms = 1e-3
        return (
            float(match.group(3)) * ms,
            float(match.group(5)) * ms,
            int(match.group(4)),
            int(match.group(6)),
        )

    def fetch(self) -> tuple[float, int, int, int]:
        """(fetch seconds, files downloaded, bytes downloaded, files kept) from the server's log line."""
        match = FETCHED.search("".join(self.log))
        if match is None:
            raise RuntimeError(f"no fetch line in the server's log:\n{''.join(self.log)[-3000:]}")
        return float(match.group(3)), int(match.group(1)), int(match.group(2)), int(match.group(4))


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def two_rows(bodies: Sequence[bytes]) -> bytes:
    """The example's first two held-out requests as one request of two rows (see the module doc)."""
    first, second = (json.loads(b) for b in bodies[:2])
    for a, b in zip(first["inputs"], second["inputs"], strict=True):
        a["shape"][0] += b["shape"][0]
        a["data"] += b["data"]
    return json.dumps(first).encode()


def evict(files: Sequence[Path]) -> None:
    """Drop the files' pages from the page cache (written back first: only clean pages go; no root
    needed)."""
    for path in files:
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def files_under(directories: Sequence[Path]) -> list[Path]:
    return [p for d in directories if d.is_dir() for p in sorted(d.rglob("*")) if p.is_file()]


def wake(
    model: str,
    md: ModelDeploymentSpec,
    directory: Path | str,
    variant: str,
    shards: int,
    caches: Sequence[Path],
    body: bytes,
    label: str = "primer",
    source: str = "local",
    fetch_dirs: Sequence[Path] | None = None,
    bucket: Bucket | None = None,
    node_cache_root: Path | None = None,
    hold: Callable[[], None] | None = None,
) -> Start:
    """Spawn every shard at once; time until all are ready and until an infer through shard 0 answers.
    `directory`: the local artifact directory, or with `bucket` its ``s3://`` URI (each shard fetching
    into its own of `fetch_dirs`); `node_cache_root`: served with ``--node-cache``; `hold`: called
    after the answer, before the servers stop."""
    env = {k: v for k, v in os.environ.items() if k != "FRUGAL_VERIFY_CACHE_DIR"}
    if bucket is not None:
        env |= bucket.env
    commands = serve_commands(md, str(directory), variant, shards, caches, fetch_dirs, node_cache_root)
    begin = time.perf_counter()
    processes = [Process(argv, env) for argv in commands]
    try:
        deadline = begin + TIMEOUT_S
        for process in processes:
            if not process.ready.wait(max(0.0, deadline - time.perf_counter())) or process.ready_at is None:
                raise RuntimeError(
                    f"frugal serve did not become ready (exit {process.popen.poll()}):\n"
                    f"{''.join(process.log)[-3000:]}"
                )
        ready_at = max(p.ready_at for p in processes if p.ready_at is not None)
        url = f"{processes[0].url}/v2/models/{md.model_name}/infer"
        attempts = 0
        while True:
            attempts += 1
            status, reply = _post(url, body)
            if status == 200:
                break
            if status not in (0, 503) or time.perf_counter() > deadline:  # 503: the next stage not up yet
                raise RuntimeError(f"{url} answered {status} (attempt {attempts}): {reply[:500]!r}")
            time.sleep(0.005)
        answered = time.perf_counter()
        if hold is not None:
            hold()
    finally:
        for process in processes:
            process.stop()
    if source == node_cache.SOURCE:
        found = node_cache.start_fields(["".join(p.log) for p in processes], fetch_dirs or [])
    else:
        checks = [p.verification() for p in processes]
        fetches = [p.fetch() for p in processes] if bucket is not None else []
        found = {
            "verify_s": max(checks)[0],
            "hash_s": max(checks)[1],
            "hashed": sum(c[2] for c in checks),
            "trusted": sum(c[3] for c in checks),
            "fetch_s": max(f[0] for f in fetches) if fetches else None,
            "fetched": sum(f[1] for f in fetches),
            "fetched_bytes": sum(f[2] for f in fetches),
            "kept": sum(f[3] for f in fetches),
        }
    return Start(
        model=model,
        shards=shards,
        cache=label,
        ready_s=ready_at - begin,
        first_answer_s=answered - begin,
        attempts=attempts,
        source=source,
        **found,
    )


def hash_seconds(files: Sequence[Path], repeat: int) -> list[float]:
    """sha256 of the variant's files with hashlib, 1 MiB reads (what the server does), page cache warm."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        for path in files:
            sha256_file(path)
        times.append(time.perf_counter() - began)
    return times


def chosen_variant(model: str, directory: Path, override: str | None) -> str:
    if override:
        return override
    stored = autoscaling.MEASUREMENTS / f"autoscaling-{model}.json"
    if stored.is_file():
        return str(json.loads(stored.read_text())["variant"])
    md, hp = autoscaling.load_example(model)
    return str(autoscaling.profile_and_plan(md, hp, directory)["variant"])


def run_model(
    model: str,
    shard_counts: Sequence[int],
    repeat: int,
    variant: str | None,
    drop: bool,
    sources: Sequence[str] = ("local",),
    bucket: Bucket | None = None,
    bucket_shard_counts: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Every row of one model: per shard count, each source's verify cache states, `repeat` wakes each.
    The bucket sources run at `bucket_shard_counts` only (default: every shard count)."""
    md, _ = autoscaling.load_example(model)
    md = autoscaling.with_shard_counts(md, shard_counts)
    low, high = min(shard_counts), max(shard_counts)
    directory = autoscaling.CACHE / (model if high == 1 else f"{model}-shards-{low}-{high}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    autoscaling.compress(md, directory)
    name = chosen_variant(model, directory, variant)
    manifest = artifacts.load_manifest(directory)
    files = [directory / f for f in artifacts.variant_files(manifest, manifest.variant(name))]
    size = sum(f.stat().st_size for f in files)
    body = two_rows(autoscaling.EXAMPLES[model].request_bodies())
    hashing = hash_seconds(files, max(repeat, 3))
    uri = bucket.publish(model, directory, files) if bucket is not None else None
    starts: list[Start] = []
    for shards in shard_counts:
        remote = [s for s in sources if s != "local" and shards in (bucket_shard_counts or shard_counts)]
        with tempfile.TemporaryDirectory(prefix="frugal-verify-") as scratch:

            def dirs(name: str, shards: int = shards, scratch: str = scratch) -> list[Path]:
                return [Path(scratch) / f"{name}-{i}" for i in range(shards)]

            kept = dirs("warm")  # filled by the first cold start
            kept_fetch, kept_fetch_cache = dirs("fetch-kept"), dirs("fetch-kept-verify")
            wake(model, md, directory, name, shards, dirs("primer"), body)
            if remote:
                assert bucket is not None and uri is not None
                # The first start fills the kept fetch directory (and pulls s3fs and botocore into the
                # page cache); starts go on until the verify cache has recorded the download, which it
                # does once the file is older than the racy window: what a restart long after the pod's
                # first start finds.
                for _ in range(PRIMING_STARTS):
                    wake(
                        model,
                        md,
                        uri,
                        name,
                        shards,
                        kept_fetch_cache,
                        body,
                        fetch_dirs=kept_fetch,
                        bucket=bucket,
                    )
                    if all(artifacts.VerifyCache(cache).read() for cache in kept_fetch_cache):
                        break
                else:
                    raise RuntimeError(
                        f"the verify cache never recorded the fetched files: {kept_fetch_cache}"
                    )
            root = Path(scratch) / "node-cache"  # the node's model cache, filled once
            if node_cache.SOURCE in remote:
                assert uri is not None
                fill = functools.partial(wake, model, md, uri, name, shards, dirs("fill-verify"), body,
                                         fetch_dirs=dirs("fill-fetch"), bucket=bucket, node_cache_root=root)  # fmt: skip
                node_cache.fill(root, directory, name, fill)
            # What --evict-page-cache drops before each start (and the S3 server's files, as they are then).
            evicted = [*files, *files_under(kept_fetch), *files_under([root / node_cache.VARIANTS])]
            for trial in range(repeat):
                # (source, verify cache, verify cache dirs, fetch dirs): each bucket start a new pod's.
                order: list[tuple[str, str, list[Path], list[Path] | None]] = []
                if "local" in sources:
                    order += [("local", "cold", kept if trial == 0 else dirs(f"cold-{trial}"), None)]
                    order += [("local", "warm", kept, None)]
                if "bucket" in remote:
                    order += [
                        ("bucket", "cold", dirs(f"new-pod-verify-{trial}"), dirs(f"new-pod-fetch-{trial}"))
                    ]
                if "bucket-refetch" in remote:
                    order += [("bucket-refetch", "warm", kept_fetch_cache, kept_fetch)]
                if node_cache.SOURCE in remote:  # a new pod on a node whose cache holds the variant
                    order += [
                        (node_cache.SOURCE, "cold", dirs(f"cached-{trial}"), dirs(f"cached-fetch-{trial}"))
                    ]
                # Alternate the order so that no row pays for its position.
                for source, label, caches, fetch_dirs in order if trial % 2 == 0 else order[::-1]:
                    if drop:
                        evict([*evicted, *(files_under([bucket.data_dir]) if bucket else [])])
                    at = directory if source == "local" else uri
                    assert at is not None
                    start = wake(
                        model, md, at, name, shards, caches, body, label, source, fetch_dirs,
                        bucket if source != "local" else None, root if source == node_cache.SOURCE else None,
                    )  # fmt: skip
                    starts.append(start)
                    did = f"verify {start.verify_s * 1000:.1f} ms, {start.hashed} hashed, {start.trusted} trusted"
                    if start.fetch_s is not None:
                        did += f", fetch {start.fetch_s:.2f} s ({start.fetched} fetched, {start.kept} kept)"
                    if start.cache_s is not None:
                        did = f"{start.cached} from the node cache in {start.cache_s * 1000:.1f} ms, nothing hashed"
                    print(
                        f"  {model} shards={shards} {source} {label} #{trial + 1}: ready {start.ready_s:.3f} s, "
                        f"first answer {start.first_answer_s:.3f} s ({did})",
                        file=sys.stderr,
                    )
    return {
        "model": model,
        "variant": name,
        "files": [str(f.relative_to(directory)) for f in files],
        "size_bytes": size,
        "uri": uri,
        "hash_seconds": hashing,
        "starts": [asdict(s) | {"ready_to_answer_s": s.ready_to_answer_s} for s in starts],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("digits", "minilm"), nargs="+", default=["digits", "minilm"])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2], help="shard counts to wake")
    parser.add_argument("--repeat", type=int, default=5, help="wakes per row (medians are printed)")
    parser.add_argument("--variant", help="serve this variant instead of the planner's choice")
    parser.add_argument(
        "--evict-page-cache", action="store_true", help="drop the variant's files from the page cache first"
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        nargs="+",
        help="where the artifacts come from (default: all four, local alone if the S3 server cannot start)",
    )
    parser.add_argument("--json", action="store_true", help="print every start as JSON, not the table")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, to see it runs: digits, 1 and 2 shards (the bucket sources 1), 1 wake per row "
        "(flags given as well still apply)",
    )
    if "--smoke" in sys.argv[1:]:
        parser.set_defaults(model=["digits"], repeat=1)
    args = parser.parse_args()
    sources = args.source or list(SOURCES)
    before = autoscaling.machine()
    with contextlib.ExitStack() as stack:
        bucket = None
        if any(s != "local" for s in sources):
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="frugal-cold-start-s3-")))
            try:
                bucket = stack.enter_context(s3_bucket(workdir))
            except Exception as exc:  # no weed binary, or it would not start: S3ServerError
                if args.source:
                    raise
                print(
                    f"warning: no S3 server ({type(exc).__name__}: {exc}); local rows only", file=sys.stderr
                )
                sources = ["local"]
        bucket_shards = [min(args.shards)] if args.smoke else None
        results = [
            run_model(
                model,
                args.shards,
                args.repeat,
                args.variant,
                args.evict_page_cache,
                sources,
                bucket,
                bucket_shards,
            )
            for model in args.model
        ]
    after = [round(x, 2) for x in os.getloadavg()]
    command = "python benchmarks/cold_start.py " + " ".join(sys.argv[1:])
    s3 = {"endpoint": bucket.endpoint, "startup_s": bucket.startup_s} if bucket else None
    if args.json:
        print(
            json.dumps(
                {"command": command, "machine": before, "loadavg_after": after, "sources": sources, "s3": s3,
                 "results": results},
                indent=1,
            )
        )  # fmt: skip
        return 0
    print(f"```\n{command.strip()}\n```\n")
    print(
        f"Machine: {before['nproc']} CPUs ({before['cpu']}), Python {before['python']}, ONNX Runtime "
        f"{before['onnxruntime']}; load average {before['loadavg']} before, {after} after. Medians of "
        f"{args.repeat} wakes per row; page cache {'evicted' if args.evict_page_cache else 'warm'}. Sources: "
        f"{', '.join(sources)}"
        + (
            f" (SeaweedFS's S3 gateway at {bucket.endpoint}, on loopback, started in {bucket.startup_s:.1f} s)"
            if bucket
            else ""
        )
        + ".\n"
    )
    print(table(results))
    print()
    print(hashing_lines(results))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
