"""Shared helpers for the compression component tests (real torch, real ONNX Runtime)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``frugal compress ARGS`` as a separate process, the way the operator's Job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "frugal.compression.compress_command", "--quiet", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=600,
        check=False,
    )


def compressed_digits(out: Path) -> Path:
    """The digits MLP compressed by the project's own `frugal compress` into `out` (fp32 and int8-dynamic)."""
    done = run_cli("--model", "zoo://digits-mlp", "--quantization", "dynamic-int8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def assert_user_error(out: Path, *args: str, mentions: str) -> None:
    """``frugal compress ARGS --out OUT`` refuses with one line mentioning ``mentions``, exit 2, and
    leaves neither the artifact nor a staging directory."""
    proc = run_cli(*args, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugal compress: error:"), proc.stderr
    assert mentions in lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
