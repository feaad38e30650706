"""Models frugal knows by name (``zoo://NAME``), each with its own held-out data."""

from __future__ import annotations

from ..errors import CompressionError
from ..source import SourceModel

NAMES = ("digits-mlp", "all-minilm-l6-v2")


def load(name: str) -> SourceModel:
    """Build or load the named zoo model (imports torch and the model's own libraries lazily)."""
    if name == "digits-mlp":
        from . import digits

        return digits.load()
    if name == "all-minilm-l6-v2":
        from . import minilm

        return minilm.load()
    raise CompressionError(f"unknown zoo model {name!r}; choose one of: {', '.join(NAMES)}")
