"""The largest request body worth reading for a variant's inputs: ``frugal serve`` derives its limit
from it (``--max-body-bytes 0``) and the operator gives the same number to the model's front, so the
front never buffers a body the model's server would refuse. Pure; the standard library only.

What the largest request the server must take looks like: `REQUEST_ROWS` rows (or the server's batch,
if larger), every other dimension the model leaves open at `DYNAMIC_DIM`, written as JSON, whose
numbers take up to `JSON_BYTES_PER_ELEMENT` characters ("-1.2345678901234567e-05,").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

REQUEST_ROWS = 256
DYNAMIC_DIM = 512
JSON_BYTES_PER_ELEMENT = 24
BYTES_ELEMENT = 1024  # a BYTES element (a string) has no size in the signature
ENVELOPE_BYTES = 64 * 1024  # names, datatypes, shapes, parameters
SMALLEST_LIMIT = 1024 * 1024


class Tensor(Protocol):
    """What the limit reads of an input: `artifact_format.TensorSpec` (not imported: the schema's modules
    import nothing but pydantic and the standard library)."""

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


def body_limit(inputs: Sequence[Tensor], max_batch_size: int) -> int:
    """The largest request body worth reading for a model with these inputs (see REQUEST_ROWS)."""
    rows = max(REQUEST_ROWS, max_batch_size)
    per_row = 0
    for spec in inputs:
        open_dims = [DYNAMIC_DIM if size < 0 else size for size in spec.shape[1:]]
        element = BYTES_ELEMENT if spec.datatype == "BYTES" else JSON_BYTES_PER_ELEMENT
        per_row += math.prod(open_dims) * element
    return max(SMALLEST_LIMIT, rows * per_row + ENVELOPE_BYTES)
