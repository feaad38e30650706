"""all-MiniLM-L6-v2 made faster by structure: a fewer-layers student distilled from the teacher's
embeddings on text harvested from the standard library (never the held-out sentences), exported
with fewer encoder layers. Tiny training here; the benchmark trains for minutes."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from frugal.compression.config import DistillationConfig
from frugal.compression.distributed import Topology
from frugal.compression.export import export_onnx
from frugal.compression.source import SourceModel
from frugal.compression.steps.distillation import Trainer
from frugal.compression.steps.transformer import encode
from frugal.compression.zoo import corpus, minilm


def _mean_cosine(model: torch.nn.Module, teacher_out: torch.Tensor, rows: tuple[torch.Tensor, ...]) -> float:
    return float(torch.nn.functional.cosine_similarity(encode(model, rows), teacher_out, dim=-1).mean())


def _attention_layers(path: Path) -> int:
    graph = onnx.load(str(path)).graph
    return sum(1 for node in graph.node if node.op_type == "Softmax")


def test_training_text_is_harvested_offline_and_disjoint_from_the_held_out_set() -> None:
    training = corpus.training_sentences(2000)
    assert len(training) == 2000 and training == corpus.training_sentences(2000)
    assert not set(training) & set(minilm.sentences())


def test_distilled_student_has_fewer_layers_and_moves_towards_the_teacher(tmp_path: Path) -> None:
    source: SourceModel = minilm.load()
    assert source.train is not None and source.module is not None
    settings = DistillationConfig.model_validate(
        {"student": {"layers": 5}, "epochs": 2, "learningRate": 2e-4, "batchSize": 16, "maxSamples": 48}
    )
    rows = tuple(x[:48] for x in source.train.inputs)
    teacher_out = encode(source.module, rows)
    trainer = Trainer(source, settings, Topology(0, 1, "127.0.0.1", 0), seed=0)
    before = _mean_cosine(trainer.student, teacher_out, rows)
    trained = trainer.fit()
    assert len(trained.bert.encoder.layer) == 5  # type: ignore[union-attr]
    assert _mean_cosine(trained, teacher_out, rows) > before + 1e-3

    path = export_onnx(trained, source.validation, source.inputs, source.outputs, tmp_path / "student.onnx")
    assert _attention_layers(path) == 5
    feed = minilm.tokenize(["A quiet morning by the lake.", "Servers need patches."])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        eager = trained(*(torch.from_numpy(feed[name]) for name in ("input_ids", "attention_mask")))
    assert exported.shape == (2, 384)
    assert float(torch.nn.functional.cosine_similarity(exported, eager, dim=-1).min()) > 0.9999


def test_attention_heads_are_removed_for_real_and_a_state_dict_of_them_loads(tmp_path: Path) -> None:
    from frugal.compression.config import CompressionConfig
    from frugal.compression.loaders import load_source
    from frugal.compression.steps.transformer import structured_bert, trim_padding

    source: SourceModel = minilm.load()
    assert source.module is not None and source.train is not None
    sample = trim_padding(*(x[:64] for x in source.train.inputs))
    pruned = structured_bert(source.module, 0.0, sample, heads=0.25)
    attention = pruned.bert.encoder.layer[0].attention  # type: ignore[union-attr, index]
    assert attention.self.query.weight.shape == (288, 384) and attention.output.dense.weight.shape == (
        384,
        288,
    )
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in source.module.parameters())

    path = export_onnx(pruned, source.validation, source.inputs, source.outputs, tmp_path / "heads.onnx")
    feed = minilm.tokenize(["A quiet morning by the lake.", "Servers need patches."])
    exported = torch.from_numpy(
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    )
    rows = tuple(torch.from_numpy(feed[name]) for name in ("input_ids", "attention_mask"))
    assert float(torch.nn.functional.cosine_similarity(exported, encode(pruned, rows), dim=-1).min()) > 0.9999

    torch.save(pruned.state_dict(), tmp_path / "heads.pt")
    model = {"uri": str(tmp_path / "heads.pt"), "format": "pytorch", "architecture": "all-minilm-l6-v2"}
    loaded = load_source(CompressionConfig.model_validate({"model": model, "output": str(tmp_path / "out")}))
    assert loaded.module is not None
    assert torch.allclose(encode(loaded.module, rows), encode(pruned, rows), atol=1e-5)
