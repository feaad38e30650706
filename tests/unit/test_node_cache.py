"""The node's model cache: offers become read-only entries only when every byte matches, entries are
found by the variant's content, and the least recently used go first when over budget."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from frugal.storage.node_cache import (
    INBOX,
    OFFER,
    STALE_OFFER_SECONDS,
    VARIANTS,
    CacheAgent,
    CachedFile,
    Entry,
    NodeCache,
    evictions,
    variant_key,
)


def variant(directory: Path, **contents: bytes) -> list[CachedFile]:
    """Files written under `directory` (name -> bytes; '__' in a name is a '/'), as a manifest lists them."""
    files = []
    for name, data in contents.items():
        relative = name.replace("__", "/")
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(CachedFile(relative, hashlib.sha256(data).hexdigest(), len(data)))
    return files


@pytest.fixture
def node(tmp_path: Path) -> tuple[CacheAgent, NodeCache]:
    agent = CacheAgent(tmp_path / "cache", budget_bytes=1000)
    agent.prepare()
    return agent, NodeCache.at(agent.root)


def test_the_key_is_the_content_not_the_order_and_changes_with_any_byte(tmp_path: Path) -> None:
    files = variant(tmp_path, **{"model.onnx": b"graph", "model.onnx.data": b"weights"})
    assert variant_key(files) == variant_key(list(reversed(files)))
    changed = [files[0], CachedFile(files[1].relative, hashlib.sha256(b"other").hexdigest(), files[1].size)]
    assert variant_key(changed) != variant_key(files)
    renamed = [files[0], CachedFile("weights.bin", files[1].sha256, files[1].size)]
    assert variant_key(renamed) != variant_key(files)


def test_an_offer_becomes_a_read_only_entry_the_next_pod_finds(
    tmp_path: Path, node: tuple[CacheAgent, NodeCache]
) -> None:
    agent, pod = node
    files = variant(tmp_path / "fetched", **{"model.onnx": b"graph", "data__weights.bin": b"w" * 300})
    assert pod.lookup(files) is None
    assert pod.offer(files, tmp_path / "fetched")
    report = agent.step()
    assert report.accepted == [variant_key(files)] and report.refused == []
    found = pod.lookup(files)
    assert found == agent.root / VARIANTS / variant_key(files)
    assert (found / "data/weights.bin").read_bytes() == b"w" * 300
    assert (found / "model.onnx").stat().st_mode & 0o777 == 0o444
    assert found.stat().st_mode & 0o777 == 0o555
    assert list((agent.root / INBOX).iterdir()) == []  # the offer is gone once published


def test_an_offer_whose_bytes_do_not_match_is_refused_and_nothing_is_published(
    tmp_path: Path, node: tuple[CacheAgent, NodeCache]
) -> None:
    agent, pod = node
    files = variant(tmp_path / "fetched", **{"model.onnx": b"graph"})
    (tmp_path / "fetched" / "model.onnx").write_bytes(b"grapH")  # same size, other bytes
    assert pod.offer(files, tmp_path / "fetched")
    report = agent.step()
    assert report.accepted == [] and "does not match its size and sha256" in report.refused[0]
    assert pod.lookup(files) is None and list((agent.root / VARIANTS).iterdir()) == []
    assert list((agent.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "tamper",
    ["key", "escape", "link", "unreadable"],
)
def test_a_forged_offer_is_refused(tmp_path: Path, node: tuple[CacheAgent, NodeCache], tamper: str) -> None:
    agent, pod = node
    files = variant(tmp_path / "fetched", **{"model.onnx": b"graph"})
    assert pod.offer(files, tmp_path / "fetched")
    [offer] = [p for p in (agent.root / INBOX).iterdir() if p.is_dir()]
    document = json.loads((offer / OFFER).read_text())
    if tamper == "key":
        document["key"] = "0" * 64
    elif tamper == "escape":
        document["files"][0]["relative"] = "../../etc/passwd"
        document["key"] = variant_key([CachedFile("../../etc/passwd", files[0].sha256, files[0].size)])
    elif tamper == "link":
        (offer / "model.onnx").unlink()
        (offer / "model.onnx").symlink_to(tmp_path / "fetched" / "model.onnx")
    else:
        document = "not json"  # type: ignore[assignment]
    (offer / OFFER).write_text(json.dumps(document))
    report = agent.step()
    assert report.accepted == [] and len(report.refused) == 1
    assert list((agent.root / VARIANTS).iterdir()) == [] and not offer.exists()


def test_the_entry_is_the_agents_copy_not_the_offering_pods_file(
    tmp_path: Path, node: tuple[CacheAgent, NodeCache]
) -> None:
    """A pod that keeps its offered file open and writes to it afterwards changes nothing cached."""
    agent, pod = node
    files = variant(tmp_path / "fetched", **{"model.onnx": b"graph"})
    assert pod.offer(files, tmp_path / "fetched")
    [offer] = [p for p in (agent.root / INBOX).iterdir() if p.is_dir()]
    with (offer / "model.onnx").open("r+b") as held:
        agent.step()
        held.write(b"EVIL!")
        held.flush()
    found = pod.lookup(files)
    assert found is not None and (found / "model.onnx").read_bytes() == b"graph"


def test_an_abandoned_offer_is_removed_after_a_while_and_a_fresh_one_is_left_to_finish(
    tmp_path: Path, node: tuple[CacheAgent, NodeCache]
) -> None:
    agent, _ = node
    partial = agent.root / INBOX / f"{'a' * 64}.123456"
    partial.mkdir()
    (partial / "model.onnx").write_bytes(b"half")
    agent.step(now=time.time())
    assert partial.exists()
    agent.step(now=time.time() + STALE_OFFER_SECONDS + 1)
    assert not partial.exists()


def test_eviction_takes_the_least_recently_used_first_until_the_rest_fits() -> None:
    entries = [Entry("old", 400, 1.0), Entry("new", 400, 3.0), Entry("mid", 400, 2.0)]
    assert evictions(entries, 1200) == []
    assert evictions(entries, 1000) == ["old"]
    assert evictions(entries, 400) == ["old", "mid"]
    assert evictions(entries, 0) == ["old", "mid", "new"]


def test_a_used_entry_outlives_an_unused_one_when_the_budget_is_exceeded(
    tmp_path: Path, node: tuple[CacheAgent, NodeCache]
) -> None:
    agent, pod = node
    first = variant(tmp_path / "a", **{"model.onnx": b"a" * 400})
    second = variant(tmp_path / "b", **{"model.onnx": b"b" * 400})
    third = variant(tmp_path / "c", **{"model.onnx": b"c" * 400})
    start = time.time()
    for index, (files, source) in enumerate(((first, "a"), (second, "b"))):
        assert pod.offer(files, tmp_path / source)
        agent.step(now=start + index)
        os.utime(agent.root / VARIANTS / variant_key(files), (start + index, start + index))
    pod.mark_used(first)  # served from the cache just now: the first is now the most recent
    agent.step(now=start + 10)
    assert pod.offer(third, tmp_path / "c")
    report = agent.step(now=start + 11)
    assert report.evicted == [variant_key(second)]
    assert pod.lookup(first) is not None and pod.lookup(third) is not None and pod.lookup(second) is None
    assert report.bytes_cached == 800 and list((agent.root / "trash").iterdir()) == []


def test_an_offer_larger_than_the_budget_is_refused(tmp_path: Path, node: tuple[CacheAgent, NodeCache]) -> None:
    agent, pod = node
    files = variant(tmp_path / "big", **{"model.onnx": b"x" * 1001})
    assert pod.offer(files, tmp_path / "big")
    assert "more than the cache's budget" in agent.step().refused[0]


def test_a_pod_without_an_inbox_only_reads(tmp_path: Path, node: tuple[CacheAgent, NodeCache]) -> None:
    agent, _ = node
    reader = NodeCache(agent.root / VARIANTS)
    files = variant(tmp_path / "fetched", **{"model.onnx": b"graph"})
    assert not reader.offer(files, tmp_path / "fetched")
    reader.mark_used(files)  # nothing to tell, and no error
    assert reader.lookup(files) is None
