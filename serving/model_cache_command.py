"""`frugal model-cache`: the node's model cache agent (a DaemonSet's pod, or a process beside local
servers). It is the only writer of the cache's ``variants/``: it publishes what serving pods offer in
``inbox/`` once every byte matches, and evicts the least recently used entries over ``--budget``
(see :mod:`frugal.storage.node_cache`). ``--root`` is one cache, or with ``--namespaces`` a directory of
caches, one per namespace (``<root>/<namespace>``, as the cluster's volumes lay it out, so no tenant
reads another's models), with one budget for them all.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from frugal.storage.node_cache import CacheAgent, Entry, evictions

PROG = "frugal model-cache"
log = logging.getLogger("frugal.serving.model_cache")
UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """`20Gi`, `500M`, `1048576` as bytes (Kubernetes quantity suffixes)."""
    stripped = text.strip()
    digits = stripped.rstrip("KkMmGgTtIi")
    suffix = stripped[len(digits) :].lower()
    if suffix not in UNITS or not digits.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 20Gi, 500M, 1048576)")
    return int(float(digits) * UNITS[suffix])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the cache's directory on the node")
    parser.add_argument("--budget", type=parse_size, default=parse_size("20Gi"),
                        help="the most the cached variants may take, all roots together (default 20Gi)")  # fmt: skip
    parser.add_argument("--namespaces", action="store_true",
                        help="--root holds one cache per namespace (each subdirectory), not one cache")  # fmt: skip
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between passes (default 0.5)")
    parser.add_argument("--once", action="store_true", help="one pass, then exit (for tests and scripts)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def cache_roots(root: Path, namespaces: bool) -> list[Path]:
    """`root` itself (one cache), or each of its subdirectories (one cache per namespace)."""
    if not namespaces:
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def one_pass(root: Path, budget_bytes: int, namespaces: bool = False) -> None:
    """Publish offers and note uses in every cache root, then evict over the budget across all of them."""
    agents = [CacheAgent(path, budget_bytes) for path in cache_roots(root, namespaces)]
    for agent in agents:
        report = agent.step(evict=False)
        for key in report.accepted:
            log.info("%s: cached variant %s (%d bytes cached here)", agent.root, key[:12], report.bytes_cached)
    everywhere = [(agent, entry) for agent in agents for entry in agent.entries()]
    by_name = {f"{id(agent)}/{entry.key}": (agent, entry) for agent, entry in everywhere}
    chosen = evictions([Entry(name, e.size, e.last_used) for name, (_, e) in by_name.items()], budget_bytes)
    for name in chosen:
        agent, entry = by_name[name]
        agent.evict(entry.key)
        log.info("%s: evicted variant %s (%d bytes, least recently used)", agent.root, entry.key[:12], entry.size)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    try:
        args.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: cannot create --root {args.root}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def stopping(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    log.info("serving the model cache at %s, budget %d bytes", args.root, args.budget)
    while True:
        one_pass(args.root, args.budget, args.namespaces)
        if args.once or stop.wait(args.interval):
            return 0


if __name__ == "__main__":
    sys.exit(main())
