"""Which variants a compression config asks for, budget decisions and the ranking (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from frugal.compression import plan
from frugal.compression.config import CompressionConfig


def config(**extra: object) -> CompressionConfig:
    return CompressionConfig.model_validate(
        {"model": {"uri": "zoo://digits-mlp"}, "output": "/tmp/x", **extra}
    )


def test_every_base_is_combined_with_every_quantization() -> None:
    names = [
        c.name
        for c in plan.candidates(
            config(
                pruning={"method": "structured", "sparsity": 0.5},
                quantization=[{"method": "dynamic-int8"}, {"method": "uniform", "bits": 4}],
                distillation={},
            )
        )
    ]
    assert names == [
        "fp32",
        "pruned-structured-50",
        "student",
        "int8-dynamic",
        "uniform-4bit",
        "pruned-structured-50-int8-dynamic",
        "pruned-structured-50-uniform-4bit",
        "student-int8-dynamic",
        "student-uniform-4bit",
    ]


def test_steps_record_what_was_done() -> None:
    found = plan.candidates(
        config(pruning={"method": "magnitude", "sparsity": 0.3}, quantization={"method": "fp16"})
    )
    assert found[-1].steps == ("pruning:magnitude:0.3", "quantization:fp16")


def test_per_channel_gets_its_own_name() -> None:
    found = plan.candidates(
        config(quantization=[{"method": "dynamic-int8"}, {"method": "dynamic-int8", "perChannel": True}])
    )
    assert [c.name for c in found] == ["fp32", "int8-dynamic", "int8-dynamic-pc"]


def test_duplicate_steps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        config(quantization=[{"method": "fp16"}, {"method": "fp16"}])


@pytest.mark.parametrize(
    ("drop", "value", "floor", "expected"),
    [
        (0.005, 0.97, None, None),
        (0.01, 0.96, None, None),
        (0.011, 0.96, None, "metric drop 0.0110 exceeds maxDrop 0.0100"),
        (0.0, 0.94, 0.95, "metric 0.9400 is below minValue 0.9500"),
    ],
)
def test_over_budget(drop: float, value: float, floor: float | None, expected: str | None) -> None:
    assert plan.over_budget(drop, 0.01, value, floor) == expected


def test_choose_and_rank() -> None:
    rows = [
        plan.Ranked("fp32", 1000, 100.0, 1.0),
        plan.Ranked("int8", 250, 120.0, 1.2),
        plan.Ranked("pruned", 400, 200.0, 0.5),
    ]
    assert plan.choose(rows) == {"smallest": "int8", "fastest": "pruned", "lowestLatency": "pruned"}
    assert plan.rank(rows) == ["pruned", "int8", "fp32"]
    assert plan.choose([]) == {}


def test_head_pruning_is_named_and_only_structured() -> None:
    import pydantic

    from frugal.compression.config import PruningConfig
    from frugal.compression.plan import pruning_name, pruning_step

    heads = PruningConfig.model_validate({"method": "structured", "sparsity": 0.0, "attentionHeads": 0.25})
    assert pruning_name(heads) == "pruned-structured-0-heads-25"
    assert pruning_step(heads) == "pruning:structured:0:heads=0.25"
    assert pruning_name(PruningConfig(method="structured", sparsity=0.5)) == "pruned-structured-50"
    with pytest.raises(pydantic.ValidationError, match="attentionHeads applies only to method structured"):
        PruningConfig.model_validate({"method": "magnitude", "attentionHeads": 0.25})
