"""`frugal model-cache`: sizes as Kubernetes writes them, and one budget across the namespaces' caches."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pytest

from frugal.serving.model_cache_command import main, one_pass, parse_size
from frugal.storage.node_cache import VARIANTS, CachedFile, NodeCache, variant_key


def test_sizes_read_as_kubernetes_quantities() -> None:
    assert parse_size("20Gi") == 20 * 2**30
    assert parse_size("500M") == 500 * 10**6
    assert parse_size("1048576") == 1048576
    assert parse_size("1.5Ki") == 1536
    for bad in ("", "20GB", "-1", "lots"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a size"):
            parse_size(bad)


def offered(root: Path, data: bytes, source: Path) -> list[CachedFile]:
    source.mkdir(parents=True)
    (source / "model.onnx").write_bytes(data)
    files = [CachedFile("model.onnx", hashlib.sha256(data).hexdigest(), len(data))]
    assert NodeCache.at(root).offer(files, source)
    return files


def test_one_budget_across_namespaces_evicts_the_least_recently_used_anywhere(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    for namespace in ("team-a", "team-b"):
        assert main(["--root", str(root / namespace), "--once"]) == 0  # each namespace's layout
    old = offered(root / "team-a", b"a" * 600, tmp_path / "a")
    one_pass(root, 1000, namespaces=True)
    entry = root / "team-a" / VARIANTS / variant_key(old)
    os.utime(entry, (1.0, 1.0))  # long unused
    new = offered(root / "team-b", b"b" * 600, tmp_path / "b")
    one_pass(root, 1000, namespaces=True)
    assert NodeCache.at(root / "team-a").lookup(old) is None  # evicted in its namespace's cache
    assert NodeCache.at(root / "team-b").lookup(new) is not None
