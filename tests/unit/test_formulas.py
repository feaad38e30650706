"""The seed's formulas with the correct worked values (the seed's own examples are wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from frugal.compression import formulas


def test_threshold_pruning_of_point_one_to_one_prunes_five() -> None:
    weights = np.round(np.arange(1, 11) * 0.1, 10)
    result = formulas.threshold_prune(weights)
    assert result.threshold == pytest.approx(0.55)
    assert result.pruned == 5
    assert np.allclose(result.weights, [0, 0, 0, 0, 0, 0.6, 0.7, 0.8, 0.9, 1.0])


def test_threshold_uses_magnitudes_and_keeps_signs() -> None:
    result = formulas.threshold_prune([-1.0, 0.1, -0.2, 0.9])
    assert result.threshold == pytest.approx(0.55)
    assert result.weights.tolist() == [-1.0, 0.0, 0.0, 0.9]


def test_weight_equal_to_threshold_is_kept() -> None:
    assert formulas.threshold_prune([1.0, 1.0]).pruned == 0


def test_uniform_quantization_eight_levels_over_unit_interval() -> None:
    result = formulas.uniform_quantize([0.1], 0.0, 1.0, 8)
    assert result.delta == pytest.approx(1 / 7)
    assert result.indices.tolist() == [1]
    assert result.values[0] == pytest.approx(1 / 7)


def test_uniform_quantization_hits_the_ends_and_clips() -> None:
    result = formulas.uniform_quantize([0.0, 1.0, -3.0, 7.0, 0.5], 0.0, 1.0, 8)
    assert result.indices.tolist() == [0, 7, 0, 7, 4]
    assert result.values[1] == pytest.approx(1.0)
    assert result.values[4] == pytest.approx(4 / 7)


def test_eight_levels_need_three_bits() -> None:
    assert formulas.bits_for_levels(8) == 3
    assert formulas.bits_for_levels(9) == 4


@pytest.mark.parametrize(("a", "b", "levels"), [(0.0, 1.0, 1), (1.0, 1.0, 8), (2.0, 1.0, 8)])
def test_uniform_quantization_rejects_bad_ranges(a: float, b: float, levels: int) -> None:
    with pytest.raises(ValueError):
        formulas.uniform_quantize([0.5], a, b, levels)


def test_gradient_averaging_two_workers() -> None:
    assert formulas.average_gradients([-0.1, 0.2]) == pytest.approx(0.05)
    assert formulas.sgd_step(0.5, [-0.1, 0.2], alpha=1.0) == pytest.approx(0.45)
    assert formulas.sgd_step(0.5, [-0.1, 0.2], alpha=0.1) == pytest.approx(0.495)


def test_gradient_averaging_is_elementwise_over_tensors() -> None:
    grads = [np.array([[1.0, 2.0]]), np.array([[3.0, 6.0]])]
    assert formulas.average_gradients(grads).tolist() == [[2.0, 4.0]]


def test_averaging_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        formulas.average_gradients([])
