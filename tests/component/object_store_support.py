"""Shared helpers for the object-store component tests (``test_object_store_artifacts.py`` against the
S3 server, ``test_object_store_providers.py`` against the GCS and Azure emulators): the components'
own commands, each run as its own process with the environment a pod gets, and what a refusal looks
like."""

from __future__ import annotations

import os
import subprocess
import sys

from compression_support import ROOT


def run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )


def compress(env: dict[str, str], out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        env,
        "frugal.compression.compress_command",
        "--quiet",
        "--model",
        "zoo://digits-mlp",
        "--quantization",
        "dynamic-int8",
        "--repeats",
        "1",
        "--out",
        out,
        *extra,
    )


def assert_refused(
    done: subprocess.CompletedProcess[str], command: str, *mentions: str, secrets: tuple[str, ...]
) -> None:
    """One line `frugal COMMAND: error: ...` naming each of `mentions`, exit 2, no key anywhere."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"frugal {command}: error: "), done.stderr
    for text in mentions:
        assert text in lines[0], done.stderr
    for secret in secrets:
        assert secret not in done.stdout and secret not in done.stderr


def run_profiler(
    env: dict[str, str], artifacts: str, hardware: str, repeats: int
) -> subprocess.CompletedProcess[str]:
    """The profiler measures the artifact at `artifacts` from the store on `hardware` and writes its
    profile back there (``profiles/<hardware>.json``)."""
    return run(
        env,
        "frugal.serving.profiling",
        "--artifacts",
        artifacts,
        "--hardware-profile",
        hardware,
        "--repeats",
        str(repeats),
    )
