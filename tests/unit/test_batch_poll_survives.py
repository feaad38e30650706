"""The operator's BatchInference poll against inputs that anyone can write: whatever one batch's input
raises stays on that batch's status and never stops the loop that reconciles every other batch.

Driven pass by pass against the in-memory store, as tests/unit/test_control_loops.py drives the
ModelDeployment loops; the inputs are real files on disk (an `.npz` as a zip archive, byte by byte).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugal.operator.control.batch_reconciler import BatchReconciler
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.decision.decide import Settings
from frugal.operator.local.store import Store
from frugal.serving.batch import inputs

API = "frugal.dev/v1alpha1"
NS = "ml"


def write_artifacts(root: Path) -> Path:
    """A manifest whose variant ``v`` takes ``input`` FP32 [-1, 64] (the poll reads only the manifest)."""
    root.mkdir(parents=True)
    (root / "variants/v").mkdir(parents=True)
    (root / "variants/v/model.onnx").write_bytes(b"graph")
    document = {
        "schemaVersion": 2,
        "model": "m",
        "generation": 1,
        "source": "test://poll",
        "createdAt": "2026-01-01T00:00:00Z",
        "files": {"variants/v/model.onnx": {"sha256": "0" * 64, "sizeBytes": 5}},
        "variants": [
            {
                "name": "v",
                "file": "variants/v/model.onnx",
                "steps": [],
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
                "sizeBytes": 5,
                "metric": None,
                "latency": None,
            }
        ],
    }
    (root / "manifest.json").write_text(json.dumps(document))
    return root


def batch_inference(name: str, artifacts: Path, data: Path, output: Path) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "BatchInference",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"artifacts": {"uri": f"file://{artifacts}", "variant": "v"}},
            "hardwareProfiles": ["cpu"],
            "input": {"uri": f"file://{data}"},
            "output": {"uri": f"file://{output}"},
            "workers": 1,
            "rowsPerShard": 100,
        },
    }


def encrypted_npz(path: Path) -> Path:
    """A real `.npz` whose member's flags say it is encrypted: zipfile raises RuntimeError on opening
    it, which the poll did not catch."""
    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros((4, 64), np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("input.npy", header.getvalue())
    data = bytearray(path.read_bytes())
    data[6] |= 0x01  # the local header's general purpose flags: bit 0, encrypted
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 0x01  # and the central directory's
    path.write_bytes(bytes(data))
    return path


class Batches:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = Store()
        self.store.create(
            {
                "apiVersion": API,
                "kind": "HardwareProfile",
                "metadata": {"name": "cpu"},
                "spec": {"accelerator": {"kind": "cpu", "count": 1}, "costPerHour": "0.10",
                         "power": {"idleWatts": 1, "maxWatts": 20}},
            }
        )  # fmt: skip
        settings = Settings(image="img", storage_uri="file:///store", allow_host_path=True)
        self.batches = BatchReconciler(self.store, Reconciler(self.store, settings))
        self.artifacts = write_artifacts(tmp / "artifacts")

    def add(self, name: str, data: Path) -> None:
        self.store.create(batch_inference(name, self.artifacts, data, self.tmp / f"out-{name}"))

    def reconcile_all(self) -> None:
        for body in self.store.find(API, "BatchInference", NS, {}):
            self.batches.reconcile_named(NS, body["metadata"]["name"])

    def status(self, name: str) -> dict[str, Any]:
        body = self.store.get(API, "BatchInference", NS, name)
        assert body is not None
        return dict(body.get("status") or {})


def unreadable(status: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["reason"] == "InputUnreadable"]
    assert len(found) == 1, status
    return found[0]


def reached_placement(status: dict[str, Any]) -> bool:
    """The batch's input was planned and its placement tried (no profile has a throughput here)."""
    return [c["reason"] for c in status.get("conditions", [])] == ["NoFeasibleOption"]


def test_an_input_zipfile_cannot_open_fails_its_batch_and_not_the_loop(tmp_path: Path) -> None:
    """Defect class: one user's input crashing the operator's poll. A member flagged
    encrypted made zipfile raise RuntimeError, which escaped the poll (it caught only BatchError and
    OSError) and every later batch in the pass went unreconciled; now the batch fails with the reason
    and the next batch is reconciled as before."""
    batches = Batches(tmp_path)
    bad = encrypted_npz(tmp_path / "bad.npz")
    good = tmp_path / "good.npz"
    np.savez(good, input=np.zeros((250, 64), np.float32))
    batches.add("a-bad", bad)
    batches.add("b-good", good)
    batches.reconcile_all()
    status = batches.status("a-bad")
    assert status["phase"] == "Failed"
    message = unreadable(status)["message"]
    assert str(bad) in message and "encrypted" in message
    assert reached_placement(batches.status("b-good"))


def test_any_exception_from_one_input_stays_on_that_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect class: one user's input crashing the operator. Whatever a reader raises — here a
    RecursionError injected for one file, as a reader's bug on some crafted file would — becomes that
    batch's InputUnreadable condition; the other batch in the same pass is reconciled."""
    batches = Batches(tmp_path)
    cursed, good = tmp_path / "cursed.npz", tmp_path / "good.npz"
    for path in (cursed, good):
        np.savez(path, input=np.zeros((250, 64), np.float32))
    describe = inputs.describe

    def fragile(path: Path, specs: Any) -> inputs.FileInfo:
        if path.name == cursed.name:
            raise RecursionError("maximum recursion depth exceeded")
        return describe(path, specs)

    monkeypatch.setattr(inputs, "describe", fragile)
    batches.add("a-cursed", cursed)
    batches.add("b-good", good)
    batches.reconcile_all()
    status = batches.status("a-cursed")
    assert status["phase"] == "Failed"
    assert unreadable(status)["message"] == (
        f"spec.input.uri file://{cursed} is unreadable: RecursionError: maximum recursion depth exceeded"
    )
    assert reached_placement(batches.status("b-good"))
