"""The verify cache: an unchanged file is trusted from its stat tuple, anything else is hashed.

Real files in a temporary directory, the real `check_variant`; what is observed is its returned
`Verification` (which files came from the cache), never a stand-in for hashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest

from frugal.serving.serve_command import parse_config
from frugal.serving.server.artifacts import (
    RACY_WINDOW_S,
    VERIFY_CACHE_FILE,
    ArtifactError,
    Manifest,
    Verification,
    check_variant,
    parse_manifest,
)

# The checks below happen, as far as the racy window is concerned, this long after the files were
# written (the check's clock is given, not waited for), so their files may be recorded.
LATER_NS = int(2 * RACY_WINDOW_S * 1e9)


def write_variant(root: Path, payloads: dict[str, bytes]) -> Manifest:
    """variants/v/<name> files and a manifest listing their sha256 and size."""
    files = {}
    for name, payload in payloads.items():
        path = root / "variants" / "v" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        files[f"variants/v/{name}"] = {"sha256": hashlib.sha256(payload).hexdigest(), "sizeBytes": len(payload)}
    first = next(iter(payloads))
    doc = {
        "schemaVersion": 2,
        "model": "m",
        "generation": 1,
        "source": "test://verify-cache",
        "createdAt": "2026-01-01T00:00:00Z",
        "files": files,
        "variants": [
            {
                "name": "v",
                "file": f"variants/v/{first}",
                "steps": [],
                "inputs": [],
                "outputs": [],
                "sizeBytes": len(payloads[first]),
                "metric": None,
                "latency": None,
            }
        ],
    }
    (root / "manifest.json").write_text(json.dumps(doc))
    return parse_manifest(json.dumps(doc))


def check(root: Path, manifest: Manifest, cache: Path | None) -> Verification:
    return check_variant(root, manifest, manifest.variant("v"), cache, now_ns=time.time_ns() + LATER_NS)


def test_a_second_check_trusts_unchanged_files_from_the_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"graph" * 1000, "model.onnx.data": b"weights" * 5000})
    first = check(root, manifest, cache)
    assert (first.hashed, first.from_cache) == (2, 0)
    assert (cache / VERIFY_CACHE_FILE).is_file()
    second = check(root, manifest, cache)
    assert (second.hashed, second.from_cache) == (0, 2)
    assert second.hash_seconds == 0.0
    assert second.path == first.path == (root / "variants/v/model.onnx").resolve()
    assert "0 hashed" in second.summary("v") and "2 trusted from the verify cache" in second.summary("v")


def test_without_a_cache_every_start_hashes(tmp_path: Path) -> None:
    manifest = write_variant(tmp_path, {"model.onnx": b"x" * 100})
    for _ in range(2):
        assert check(tmp_path, manifest, None).hashed == 1


def test_a_file_rewritten_in_place_with_the_same_size_and_mtime_is_hashed_and_refused(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 4096})
    assert check(root, manifest, cache).hashed == 1
    model = root / "variants/v/model.onnx"
    before = model.stat()
    with model.open("r+b") as handle:  # same inode, same size, different content
        handle.write(b"b")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back, as `touch -d` would
    assert model.stat().st_size == before.st_size and model.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ArtifactError, match=r"sha256 of variants/v/model.onnx is .* but the manifest says"):
        check(root, manifest, cache)


def test_a_file_touched_but_unchanged_is_hashed_again_and_accepted(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 4096})
    check(root, manifest, cache)
    model = root / "variants/v/model.onnx"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns - 1_000_000_000))
    assert check(root, manifest, cache).hashed == 1
    assert check(root, manifest, cache).from_cache == 1  # recorded again with its new stat tuple


def test_a_new_manifest_sha256_is_not_vouched_for_by_an_old_entry(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    check(root, manifest, cache)
    doc = json.loads((root / "manifest.json").read_text())
    doc["files"]["variants/v/model.onnx"]["sha256"] = "0" * 64
    with pytest.raises(ArtifactError, match=r"sha256 of variants/v/model\.onnx"):
        check(root, parse_manifest(json.dumps(doc)), cache)


def test_a_size_that_differs_from_the_manifest_is_refused_before_hashing(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    check(root, manifest, cache)
    (root / "variants/v/model.onnx").write_bytes(b"a" * 65)
    with pytest.raises(ArtifactError, match=r"model\.onnx is 65 bytes, but the manifest says 64"):
        check(root, manifest, cache)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 1, "entries": [{"path": 3}]}',
        b'{"version": 99, "entries": []}',
        b"",
    ],
)
def test_a_corrupt_cache_is_ignored_with_a_debug_log(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    cache.mkdir()
    (cache / VERIFY_CACHE_FILE).write_bytes(content)
    with caplog.at_level(logging.DEBUG, logger="frugal.serving"):
        result = check(root, manifest, cache)
    assert result.hashed == 1
    assert any(r.levelno == logging.DEBUG and "verify cache" in r.getMessage() for r in caplog.records)
    assert check(root, manifest, cache).from_cache == 1  # rewritten whole


def test_a_forged_entry_for_another_sha256_does_not_vouch(tmp_path: Path) -> None:
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    check(root, manifest, cache)
    doc = json.loads((cache / VERIFY_CACHE_FILE).read_text())
    doc["entries"][0]["sha256"] = "1" * 64
    (cache / VERIFY_CACHE_FILE).write_text(json.dumps(doc))
    assert check(root, manifest, cache).hashed == 1


def test_files_changed_just_before_the_check_are_not_recorded(tmp_path: Path) -> None:
    """A file modified in the same timestamp tick as it is hashed could change again unseen."""
    root, cache = tmp_path / "a", tmp_path / "cache"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    fresh = check_variant(root, manifest, manifest.variant("v"), cache, now_ns=time.time_ns())
    assert fresh.hashed == 1
    assert not (cache / VERIFY_CACHE_FILE).exists()


def test_an_unwritable_cache_directory_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "a"
    manifest = write_variant(root, {"model.onnx": b"a" * 64})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="frugal.serving"):
        assert check(root, manifest, blocker / "cache").hashed == 1
    assert any("cannot write the verify cache" in r.getMessage() for r in caplog.records)


def test_servers_sharing_a_directory_keep_each_others_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one = write_variant(tmp_path / "one", {"model.onnx": b"1" * 64})
    two = write_variant(tmp_path / "two", {"model.onnx": b"2" * 64})
    check(tmp_path / "one", one, cache)
    check(tmp_path / "two", two, cache)
    assert check(tmp_path / "one", one, cache).from_cache == 1
    assert check(tmp_path / "two", two, cache).from_cache == 1
    assert not [p for p in cache.iterdir() if p.name != VERIFY_CACHE_FILE]  # no temporary files left


def test_entries_of_deleted_files_are_dropped(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one = write_variant(tmp_path / "one", {"model.onnx": b"1" * 64})
    two = write_variant(tmp_path / "two", {"model.onnx": b"2" * 64})
    check(tmp_path / "one", one, cache)
    (tmp_path / "one/variants/v/model.onnx").unlink()
    check(tmp_path / "two", two, cache)
    paths = [e["path"] for e in json.loads((cache / VERIFY_CACHE_FILE).read_text())["entries"]]
    assert paths == [str((tmp_path / "two/variants/v/model.onnx").resolve())]


def test_the_flag_and_its_environment_variable() -> None:
    base = ["--artifacts", "/a", "--variant", "v"]
    assert parse_config(base, {})[0].verify_cache_dir is None
    assert parse_config(base, {"FRUGAL_VERIFY_CACHE_DIR": "/c"})[0].verify_cache_dir == Path("/c")
    assert parse_config(base, {"FRUGAL_VERIFY_CACHE_DIR": ""})[0].verify_cache_dir is None
    flagged = parse_config([*base, "--verify-cache-dir", "/d"], {"FRUGAL_VERIFY_CACHE_DIR": "/c"})
    assert flagged[0].verify_cache_dir == Path("/d")
