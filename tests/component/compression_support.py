"""Shared helpers for the compression component tests (real torch, real ONNX Runtime)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``frugal compress ARGS`` as a separate process, the way the operator's Job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "frugal.compression.cli", "--quiet", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=600,
        check=False,
    )
