"""`frugal serve --verify-cache-dir`: a restart trusts unchanged files without hashing them, still
refuses a file changed in place, and shrugs off a corrupt cache file.

Real parts: the real CLI in a subprocess on 127.0.0.1 with ONNX Runtime, a real artifact directory,
a real cache directory. What is observed is the server's own account of its verification (its log
line says how many files it hashed and how many it trusted from the cache) and its exit code.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from serving_support import Server, infer_json, mlp, running_server, serve_command, write_artifacts

from frugal.serving.server.artifacts import RACY_WINDOW_S, VERIFY_CACHE_FILE

MODEL = "digits"
VERIFIED = re.compile(r"verified variant 'fp32': 1 file\(s\), \d+ bytes in [\d.]+ ms; (\d) hashed in [\d.]+ ms, (\d)")


def fresh_artifacts(directory: Path) -> Path:
    written = write_artifacts(directory, MODEL, {"fp32": mlp()})
    time.sleep(RACY_WINDOW_S + 0.2)  # files this fresh are verified but not recorded (see artifacts.py)
    return written


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_artifacts(tmp_path_factory.mktemp("artifacts"))


def verification(server: Server) -> tuple[int, int]:
    """(files hashed, files trusted from the cache) from the server's log line."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = VERIFIED.search(server.stderr())
        if match:
            return int(match.group(1)), int(match.group(2))
        time.sleep(0.05)
    raise AssertionError(f"no verification line in the log: {server.stderr()}")


def answers(server: Server) -> bool:
    return infer_json(server.url, MODEL, {"input": np.zeros((1, 64), np.float32)}).status == 200


def test_a_restart_trusts_the_cache_and_does_not_hash(artifacts: Path, tmp_path: Path) -> None:
    cache = tmp_path / "verify-cache"
    with running_server(artifacts, "fp32", "--verify-cache-dir", str(cache)) as first:
        assert verification(first) == (1, 0)
        assert answers(first)
    assert (cache / VERIFY_CACHE_FILE).is_file()
    with running_server(artifacts, "fp32", env={"FRUGAL_VERIFY_CACHE_DIR": str(cache)}) as second:
        assert verification(second) == (0, 1)
        assert "trusted from the verify cache at" in second.stderr()
        assert answers(second)


def test_without_the_setting_every_start_hashes(artifacts: Path) -> None:
    for _ in range(2):
        with running_server(artifacts, "fp32", env={"FRUGAL_VERIFY_CACHE_DIR": ""}) as server:
            assert verification(server) == (1, 0)
            assert "trusted from no verify cache" in server.stderr()


def test_a_file_changed_in_place_is_hashed_and_refused_despite_the_cache(tmp_path: Path) -> None:
    directory = fresh_artifacts(tmp_path / "a")
    cache = tmp_path / "verify-cache"
    with running_server(directory, "fp32", "--verify-cache-dir", str(cache)) as server:
        assert verification(server) == (1, 0)
    model = directory / "variants/fp32/model.onnx"
    before = model.stat()
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    with model.open("r+b") as handle:  # same inode, same size
        handle.write(data)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    done = subprocess.run(
        [*serve_command(directory, "fp32"), "--verify-cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2  # input it cannot use
    assert "sha256 of variants/fp32/model.onnx is" in done.stderr and "manifest says" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_corrupt_cache_file_is_ignored(artifacts: Path, tmp_path: Path) -> None:
    cache = tmp_path / "verify-cache"
    cache.mkdir()
    (cache / VERIFY_CACHE_FILE).write_text('{"version": 1, "entries": [{"path": ')
    with running_server(artifacts, "fp32", "--verify-cache-dir", str(cache), "--log-level", "DEBUG") as server:
        assert verification(server) == (1, 0)
        assert answers(server)
        assert re.search(r"DEBUG frugal.serving: verify cache .* is corrupt", server.stderr())
    with running_server(artifacts, "fp32", "--verify-cache-dir", str(cache)) as again:
        assert verification(again) == (0, 1)  # rewritten whole by the first start
