"""The profiling Job measures a variant compression cut into stages at every shard count through a chain
of real `frugal serve` processes (peak resident memory included), and a variant without stages on its
session alone; a chain that cannot start fails the Job with the server's own words.

Real parts: compression's cutter, ONNX Runtime, `python -m frugal.serving.profiling` and the servers it
starts on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving_support import mlp, write_artifacts


def profile(artifacts: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "frugal.serving.profiling", "--artifacts", str(artifacts),
        "--hardware-profile", "cpu", "--batch-size", "4", "--chain-seconds", "0.5", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def rows(artifacts: Path) -> list[dict[str, object]]:
    return list(json.loads((artifacts / "profiles" / "cpu.json").read_text())["variants"])


def test_every_shard_count_is_measured_through_servers(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp((64, 256, 128, 10))}, shard_counts=(2, 3))
    done = profile(artifacts)
    assert done.returncode == 0, done.stderr
    measured = {row["shards"]: row for row in rows(artifacts)}
    assert sorted(measured) == [1, 2, 3]
    for row in measured.values():
        assert row["method"] == "servers" and row["batchSize"] == 4
        assert row["throughputRps"] > 0 and row["latencyP95Ms"] > 0  # type: ignore[operator]
        assert row["memoryBytes"] > 50 * 2**20  # type: ignore[operator]  # an interpreter and a runtime at least
    assert "fp32 x3:" in done.stderr and "requests through servers" in done.stderr


def test_only_the_allowed_counts_are_measured(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp()}, shard_counts=(2,))
    done = profile(artifacts, "--shard-counts", "2")
    assert done.returncode == 0, done.stderr
    assert [(row["shards"], row["method"]) for row in rows(artifacts)] == [(2, "servers")]


def test_a_variant_without_stages_is_timed_on_its_session(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp()})
    done = profile(artifacts)
    assert done.returncode == 0, done.stderr
    [row] = rows(artifacts)
    assert (row["shards"], row["method"], row.get("memoryBytes")) == (1, "session", None)


def test_a_chain_that_cannot_start_fails_with_the_servers_words(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp()}, shard_counts=(2,))
    stage = artifacts / "variants/fp32/stages-2/stage-1/model.onnx"
    stage.write_bytes(stage.read_bytes()[:-10])  # no longer what the manifest hashed
    done = profile(artifacts, "--shard-counts", "2")
    assert done.returncode == 1
    assert "a stage server did not become ready" in done.stderr and "stage-1/model.onnx" in done.stderr
    assert not (artifacts / "profiles" / "cpu.json").exists()
