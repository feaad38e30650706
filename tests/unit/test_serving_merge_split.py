"""Pure batching pieces: which requests stack, how they merge, and how outputs split back."""

from __future__ import annotations

import numpy as np
import pytest

from frugal.serving.server.batching import group_compatible, merge, split


def req(rows: int, width: int = 3, dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), rows, dtype=dtype)}


def test_merge_then_split_gives_each_request_its_rows() -> None:
    requests = [req(1), req(3), req(2)]
    merged, sizes = merge(requests)
    assert merged["x"].shape == (6, 3) and sizes == [1, 3, 2]
    parts = split({"y": merged["x"] * 2}, sizes)
    for request, part in zip(requests, parts, strict=True):
        np.testing.assert_array_equal(part["y"], request["x"] * 2)


def test_only_same_trailing_shape_and_dtype_stack() -> None:
    requests = [req(1), req(1, width=4), req(2), req(1, dtype=np.float64), req(5, width=4)]
    assert group_compatible(requests) == [[0, 2], [1, 4], [3]]


def test_split_refuses_outputs_without_a_row_per_input() -> None:
    with pytest.raises(ValueError, match="not 3 rows"):
        split({"pooled": np.zeros((1, 8))}, [1, 2])
