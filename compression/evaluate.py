"""Run an ONNX file with ONNX Runtime on held-out data and score it.

Classifiers are scored by accuracy or macro F1 of their argmax predictions against the labels;
encoders by the minimum cosine similarity of their outputs to the FP32 model's outputs on the same
inputs (``drop = 1 - min cosine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .errors import CompressionError
from .source import Arrays, HeldOut


@dataclass(frozen=True)
class Score:
    """A variant's metric against the baseline; ``drop`` is positive when it got worse."""

    name: str
    value: float
    baseline: float

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": round(self.value, 6),
            "baseline": round(self.baseline, 6),
            "drop": round(self.drop, 6),
        }


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped exceptions
        raise CompressionError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0]}") from exc


def run_batched(sess: ort.InferenceSession, data: HeldOut, batch: int = 64) -> npt.NDArray[np.float32]:
    """The first output over all held-out rows, in batches."""
    names = {i.name for i in sess.get_inputs()}
    missing = names - set(data.inputs)
    if missing:
        raise CompressionError(
            f"the data has no input named {sorted(missing)[0]!r}; the model expects {sorted(names)}"
        )
    chunks: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(data), batch):
        feed: Arrays = {n: data.inputs[n][start : start + batch] for n in names}
        try:
            chunks.append(np.asarray(sess.run(None, feed)[0], dtype=np.float32))
        except Exception as exc:
            raise CompressionError(f"the data does not fit the model: {str(exc).splitlines()[0]}") from exc
    return np.concatenate(chunks)


def accuracy(outputs: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    return float((outputs.argmax(axis=1) == labels).mean())


def macro_f1(outputs: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    """Macro F1 of the argmax predictions over the classes in the labels or the predictions (a class
    never predicted, or never right, scores 0, without a warning)."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, outputs.argmax(axis=1), average="macro", zero_division=0))


LABEL_METRICS = {"accuracy": accuracy, "f1": macro_f1}
"""Metrics scored against the validation labels, by name."""


def min_cosine(outputs: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> float:
    """The worst row's cosine similarity between two output matrices."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.maximum(norms, 1e-12)).min())


@dataclass(frozen=True)
class Evaluator:
    """Scores variants against the held-out data and the FP32 reference outputs."""

    metric: str
    data: HeldOut
    reference: npt.NDArray[np.float32]
    baseline: float

    @classmethod
    def from_baseline(cls, metric: str, data: HeldOut, fp32_path: Path) -> Evaluator:
        reference = run_batched(session(fp32_path), data)
        if metric in LABEL_METRICS:
            if data.labels is None:
                raise CompressionError(f"accuracyBudget.metric {metric} needs labels in the validation data")
            return cls(metric, data, reference, LABEL_METRICS[metric](reference, data.labels))
        return cls(metric, data, reference, 1.0)

    def score(self, path: Path) -> Score:
        outputs = run_batched(session(path), self.data)
        if self.metric in LABEL_METRICS:
            assert self.data.labels is not None
            return Score(self.metric, LABEL_METRICS[self.metric](outputs, self.data.labels), self.baseline)
        return Score("cosine", min_cosine(outputs, self.reference), self.baseline)
