"""Serving's small decisions: CPU limits, provider fallback, the power estimate, flags and env vars."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugal.serving.serve_command import parse_config, parse_labels
from frugal.serving.server.power import BusyClock, estimate_watts
from frugal.serving.server.runtime import cpu_limit, provider_chain


@pytest.mark.parametrize(
    ("cpu_max", "cpus", "expected"),
    [
        ("max 100000", 8, 8),
        ("150000 100000", 8, 2),
        ("50000 100000", 8, 1),
        ("800000 100000", 2, 2),
        (None, 4, 4),
        ("garbage", 3, 3),
    ],
)
def test_cpu_limit_from_cgroup(cpu_max: str | None, cpus: int, expected: int) -> None:
    assert cpu_limit(cpu_max, cpus) == expected


def test_provider_fallback_is_explained() -> None:
    gpu = provider_chain("TensorrtExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert gpu.fallback is not None and "falling back to CUDAExecutionProvider" in gpu.fallback
    cpu = provider_chain("CPUExecutionProvider", ["CPUExecutionProvider"])
    assert cpu.providers == ("CPUExecutionProvider",) and cpu.fallback is None
    with pytest.raises(ValueError, match="unknown execution provider 'TPU'"):
        provider_chain("TPU", ["CPUExecutionProvider"])


def test_power_estimate_is_linear_in_utilisation() -> None:
    assert estimate_watts(0.0, 30, 70) == 30
    assert estimate_watts(0.5, 30, 70) == 50
    assert estimate_watts(3.0, 30, 70) == 70


def test_busy_clock_reports_the_busy_fraction_of_each_window() -> None:
    now = [0.0]
    clock = BusyClock(lambda: now[0])
    clock.add(0.25)
    now[0] = 1.0
    assert clock.utilisation() == (0.25, 1.0)
    now[0] = 3.0
    assert clock.utilisation() == (0.0, 2.0)


def test_flags_win_over_environment_variables() -> None:
    env = {
        "FRUGAL_ARTIFACTS": "/a",
        "FRUGAL_VARIANT": "int8",
        "FRUGAL_PORT": "9000",
        "FRUGAL_LABELS": "namespace=x",
    }
    config, _ = parse_config(["--port", "9100"], env)
    assert config.artifacts == Path("/a") and config.variant == "int8" and config.port == 9100
    assert config.labels == {"namespace": "x"}
    assert config.grpc_port == 8081  # the default, which the operator's pod templates also pass
    assert parse_config([], {**env, "FRUGAL_GRPC_PORT": "-1"})[0].grpc_port == -1
    assert parse_config(["--grpc-port", "0"], env)[0].grpc_port == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard-count", "2"], "needs --next-stage URL"),
        (["--shard-index", "2", "--shard-count", "2"], "must be in [0, --shard-count 2)"),
        (["--idle-watts", "5"], "give both --idle-watts and --max-watts"),
        (["--max-batch-size", "0"], "--max-batch-size must be positive"),
        (["--labels", "oops"], "invalid parse_labels value"),
        (["--grpc-port", "-2"], "--grpc-port -2 must be in 1..65535 (or 0 for any free port, -1"),
        (["--grpc-port", "70000"], "--grpc-port 70000 must be in"),
        (["--port", "9000", "--grpc-port", "9000"], "--grpc-port 9000 must differ from --port"),
        (["--max-body-bytes", "-1"], "--max-body-bytes must be positive (or 0 to derive it"),
        (["--latency-target-ms", "0"], "--latency-target-ms must be positive"),
    ],
)
def test_bad_combinations_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_config(["--artifacts", "/a", "--variant", "v", *argv], {})
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_labels_parse() -> None:
    assert parse_labels("namespace=ml, hardware_profile=cpu-small,") == {
        "namespace": "ml",
        "hardware_profile": "cpu-small",
    }
    with pytest.raises(ValueError, match="must look like key=value"):
        parse_labels("a=b,c")
