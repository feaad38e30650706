"""`frugal batch` as a user runs it: the example's ModelDeployment pipeline, the placement table, worker
processes, the joined output; the same predictions with 1 and 2 workers; a finished output is never
overwritten unless asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FRUGAL = [sys.executable, "-m", "frugal.operator.main"]


def batch_file(tmp: Path, output: Path, overwrite: bool) -> Path:
    document = yaml.safe_load((ROOT / "examples" / "digits-batch.yaml").read_text())
    document["spec"]["output"] = {"uri": f"file://{output}", "overwrite": overwrite}
    path = tmp / f"batch-{output.name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(tmp: Path, output: Path, *flags: str, overwrite: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [*FRUGAL, "batch", str(batch_file(tmp, output, overwrite)), str(ROOT / "examples" / "digits.yaml"),
            "--workdir", str(tmp / "work"), *flags]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=tmp)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("batch")
    one = run(tmp, tmp / "one", "--workers", "1")
    two = run(tmp, tmp / "two", "--workers", "2")
    return {"tmp": tmp, "one": one, "two": two}


def test_two_workers_give_the_one_worker_predictions(runs: dict[str, Any]) -> None:
    tmp = runs["tmp"]
    for name in ("one", "two"):
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    summaries = {name: json.loads(runs[name].stdout.strip().splitlines()[-1]) for name in ("one", "two")}
    assert summaries["one"]["rows"] == summaries["two"]["rows"] == 450
    assert summaries["two"]["workers"] == [0, 1] and summaries["one"]["workers"] == [0]
    assert summaries["two"]["hardwareProfile"] == "local-cpu"
    one, two = np.load(tmp / "one" / "predictions.npz"), np.load(tmp / "two" / "predictions.npz")
    assert one.files == two.files
    for name in one.files:
        np.testing.assert_array_equal(one[name], two[name])
    # The placement table says what each candidate costs per row before anything runs.
    assert "cost per row on each candidate" in runs["two"].stderr and "chosen" in runs["two"].stderr


def test_a_finished_output_is_left_alone_unless_overwrite_is_asked(runs: dict[str, Any]) -> None:
    tmp = runs["tmp"]
    predictions = tmp / "one" / "predictions.npz"
    before = predictions.stat().st_mtime_ns
    again = run(tmp, tmp / "one", "--workers", "1")
    assert again.returncode == 2
    message = [line for line in again.stderr.splitlines() if "already exists" in line]
    assert message and "overwrite" in message[0]
    assert predictions.stat().st_mtime_ns == before
    replaced = run(tmp, tmp / "one", "--workers", "1", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert predictions.stat().st_mtime_ns != before


def test_artifacts_straight_from_frugal_compress_are_placed_by_the_reports_throughput(tmp_path: Path) -> None:
    """Defect class: local and cluster paths disagreeing. `frugal batch` on the output of `frugal
    compress` (no profiling run) failed with "no throughput measured", while the operator falls back to
    the compression report's throughput; the local command now runs the operator's own reconciler."""
    artifacts = tmp_path / "artifacts"
    compressed = subprocess.run(
        [*FRUGAL, "compress", "--model", "zoo://digits-mlp", "--quantization", "dynamic-int8", "--out", str(artifacts)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert compressed.returncode == 0, compressed.stderr[-3000:]
    document = {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": "from-compress"},
        "spec": {
            "model": {"artifacts": {"uri": f"file://{artifacts}", "variant": "int8-dynamic"}},
            "hardwareProfiles": ["local-cpu"],
            "input": {"uri": "zoo://digits-mlp"},
            "output": {"uri": f"file://{tmp_path / 'out'}", "overwrite": False},
            "maxWorkers": 1,
            "batchSize": 64,
            "rowsPerShard": 128,
        },
    }
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(document))
    argv = [*FRUGAL, "batch", str(path), str(ROOT / "examples" / "digits.yaml"), "--workdir", str(tmp_path / "work")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 450 and summary["hardwareProfile"] == "local-cpu"
    assert (tmp_path / "out" / "predictions.npz").is_file()
