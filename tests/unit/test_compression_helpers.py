"""Pure helpers of the compression steps: the training-text filter, padding trim, timing spread and
the fallback's budget-with-margin rule."""

from __future__ import annotations

import pytest
import torch

from frugal.compression.config import AccuracyBudget
from frugal.compression.evaluate import Score
from frugal.compression.latency import spread
from frugal.compression.steps.sensitivity import fits, smallest_fitting
from frugal.compression.steps.transformer import trim_padding
from frugal.compression.zoo import corpus


def test_sentences_split_after_end_marks_before_capitals() -> None:
    text = "Return the value.  It may be None!\n  Use   int() here. e.g. not split"
    assert corpus.split_sentences(text) == [
        "Return the value.",
        "It may be None!",
        "Use int() here. e.g. not split",
    ]
    assert corpus.split_sentences("   ") == []


@pytest.mark.parametrize(
    ("sentence", "plain"),
    [
        ("The turtle's orientation does not change at all.", True),
        ("Too short to teach.", False),
        ("lowercase start is probably a fragment of code here.", False),
        ("Return x[0] + y[1] * {key: value} for (a, b) in z.", False),
        ("A sentence without the closing mark at its very end", False),
    ],
)
def test_only_plain_prose_is_kept(sentence: str, plain: bool) -> None:
    assert corpus.is_plain_sentence(sentence) is plain


def test_doctest_paragraphs_are_skipped_and_picking_is_deterministic() -> None:
    docs = [
        "Summary line that is long enough to be kept here.\n\n>>> print('Example code is not prose at all.')",
        "Summary line that is long enough to be kept here. Another sentence that is long enough too.",
    ]
    found = list(corpus.sentences_of(docs))
    assert found == [
        "Summary line that is long enough to be kept here.",
        "Summary line that is long enough to be kept here.",
        "Another sentence that is long enough too.",
    ]
    assert corpus.pick(found, 5) == corpus.pick(found, 5)
    assert sorted(corpus.pick(found, 5)) == sorted(set(found))
    assert len(corpus.pick(found, 1)) == 1


def test_trim_padding_keeps_only_columns_some_row_uses() -> None:
    ids = torch.tensor([[101, 7, 102, 0, 0], [101, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    short_ids, short_mask = trim_padding(ids, mask)
    assert short_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert short_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_spread_is_range_over_median() -> None:
    assert spread([10.0, 11.0, 12.0]) == pytest.approx(2.0 / 11.0)
    assert spread([5.0, 5.0]) == 0.0


def test_fallback_margin_demands_headroom_inside_the_budget() -> None:
    budget = AccuracyBudget(max_drop=0.01)
    just_inside = Score("cosine", 0.9905, 1.0)
    assert fits(just_inside, budget)
    assert not fits(just_inside, budget, margin=0.003)
    assert fits(Score("cosine", 0.994, 1.0), budget, margin=0.003)
    floor = AccuracyBudget(max_drop=1.0, min_value=0.98)
    assert fits(Score("cosine", 0.981, 1.0), floor) and not fits(Score("cosine", 0.981, 1.0), floor, 0.002)


@pytest.mark.parametrize(
    ("threshold", "limit", "expected"), [(1, 20, 1), (5, 20, 5), (13, 20, 13), (20, 20, 20), (21, 20, None)]
)
def test_smallest_fitting_count_is_found_by_doubling_then_bisecting(
    threshold: int, limit: int, expected: int | None
) -> None:
    tried: list[int] = []

    def fits_at(count: int) -> bool:
        tried.append(count)
        return count >= threshold

    assert smallest_fitting(limit, fits_at) == expected
    assert len(tried) <= 2 * limit.bit_length() + 1


def test_ranks_sharing_a_gpu_reduce_with_gloo_and_one_rank_per_gpu_with_nccl() -> None:
    from frugal.compression.device import distributed_backend

    assert distributed_backend("cuda", ranks_on_node=1, gpus_on_node=1) == "nccl"
    assert distributed_backend("cuda", ranks_on_node=2, gpus_on_node=1) == "gloo"
    assert distributed_backend("cuda", ranks_on_node=8, gpus_on_node=8) == "nccl"
    assert distributed_backend("cpu", ranks_on_node=1, gpus_on_node=0) == "gloo"


def test_torchrun_local_world_size_gives_each_rank_its_place_on_the_node() -> None:
    from frugal.compression.distributed import topology

    found = topology({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert (found.ranks_on_node, found.local_rank) == (4, 1)
    pod = topology({"JOB_COMPLETION_INDEX": "3", "WORLD_SIZE": "4"})
    assert (pod.ranks_on_node, pod.local_rank) == (1, 0)


def test_fortune_entries_split_on_percent_lines_and_drop_attributions() -> None:
    text = "A stitch in time saves nine.\n%\nBe yourself; everyone else is already taken.\n\t\t-- Oscar Wilde\n%\n"
    assert list(corpus.fortune_entries(text)) == [
        "A stitch in time saves nine.",
        "Be yourself; everyone else is already taken.",
    ]


def test_interleaving_takes_each_source_in_turn_and_keeps_the_rest() -> None:
    assert corpus.interleave(["a", "b", "c"], ["x"], ["a", "y"]) == ["a", "x", "b", "y", "c"]


def test_training_text_mixes_everyday_and_technical_english() -> None:
    everyday = set(corpus.harvest_everyday())
    training = corpus.training_sentences(1000)
    from_fortunes = sum(s in everyday for s in training)
    assert len(everyday) > 10_000
    assert 400 <= from_fortunes <= 600
