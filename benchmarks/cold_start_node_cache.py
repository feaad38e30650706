"""The node's model cache for `cold_start.py --source node-cache`: a new pod on a node whose cache
already holds its variant (`frugal serve --node-cache ROOT`, :mod:`frugal.storage.node_cache`).

The cache is filled once before the timed starts, as a node's first pod and its agent fill it: the
agent's pass creates the layout, one start with ``--node-cache ROOT`` (discarded) fetches, verifies and
offers the variant in its background thread, the start is held until ``ROOT/inbox`` holds a complete
offer (its ``offer.json``), one agent pass (``frugal model-cache --once``) publishes it, and the entry
is checked to be there. Each timed start must then say so in its log (the server's ``... from the node
cache at ... in X ms, nothing fetched or hashed``, with no verification line) and leave only
``manifest.json`` in its fetch directory; anything else is an error, not a row.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frugal.schema.artifact_format import MANIFEST
from frugal.serving.server import artifacts
from frugal.serving.server.model_files import cache_files
from frugal.storage.node_cache import INBOX, OFFER, VARIANTS, NodeCache

SOURCE = "node-cache"
FROM_NODE_CACHE = re.compile(
    r"variant '[^']+': (\d+) file\(s\), (\d+) bytes from the node cache at \S+ in ([\d.]+) ms, "
    r"nothing fetched or hashed"
)
OFFER_TIMEOUT_S = 60.0


def agent_pass(root: Path) -> None:
    """One pass of the node's agent over `root` (creating its layout the first time)."""
    argv = [sys.executable, "-m", "frugal.serving.model_cache_command", "--root", str(root), "--once"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the model cache agent failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def wait_for_offer(root: Path, timeout: float = OFFER_TIMEOUT_S) -> None:
    """Until `root`'s inbox holds a complete offer (the server offers in the background once verified)."""
    deadline = time.monotonic() + timeout
    while not any((offer / OFFER).is_file() for offer in (root / INBOX).iterdir() if offer.is_dir()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no complete offer in {root / INBOX} after {timeout:.0f} s")
        time.sleep(0.05)


def fill(root: Path, directory: Path, variant: str, start: Callable[..., Any]) -> Path:
    """Fill the cache at `root` with `variant` (of the artifacts in `directory`) as a node's first pod
    and agent do; `start(hold=...)` is one discarded start with ``--node-cache root`` that calls `hold`
    before its servers stop. Returns the entry's directory."""
    agent_pass(root)
    start(hold=lambda: wait_for_offer(root))
    agent_pass(root)
    manifest = artifacts.load_manifest(directory)
    entry = NodeCache.at(root).lookup(cache_files(manifest, manifest.variant(variant)))
    if entry is None:
        raise RuntimeError(f"the agent published no entry for {variant!r} in {root / VARIANTS}")
    return entry


def start_fields(logs: Sequence[str], fetch_dirs: Sequence[Path]) -> dict[str, Any]:
    """A cold start's `Start` fields from each shard's log: every shard loaded from the node cache
    (the slowest one's line), nothing hashed, and nothing but ``manifest.json`` fetched."""
    hits = []
    for log in logs:
        match = FROM_NODE_CACHE.search(log)
        if match is None or "verified variant" in log:
            raise RuntimeError(f"a {SOURCE} start did not load from the node cache:\n{log[-3000:]}")
        hits.append((float(match.group(3)) * 1e-3, int(match.group(1))))
    fetched = sorted(p.relative_to(d).as_posix() for d in fetch_dirs for p in d.rglob("*") if p.is_file())
    if fetched != [MANIFEST] * len(fetch_dirs):
        raise RuntimeError(f"a {SOURCE} start fetched more than {MANIFEST}: {fetched}")
    return {
        "verify_s": 0.0,
        "hash_s": 0.0,
        "hashed": 0,
        "trusted": 0,
        "cached": sum(files for _, files in hits),
        "cache_s": max(seconds for seconds, _ in hits),
        "fetch_s": None,
        "fetched": 0,
        "fetched_bytes": 0,
        "kept": 0,
    }
