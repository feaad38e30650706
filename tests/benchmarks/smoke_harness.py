"""Running a benchmark script's smoke mode and reading the Markdown tables it prints."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 420.0


@dataclass(frozen=True)
class Ran:
    """A finished smoke run: its standard output (the tables) and its standard error (the progress)."""

    stdout: str
    stderr: str
    seconds: float

    def table(self, header: str) -> list[dict[str, str]]:
        """The rows of the first Markdown table whose header row starts with `header`, as dicts keyed
        by the header's cells; fails if there is no such table or it has no rows."""
        lines = self.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
        assert start is not None, f"no table starting {header!r} in the output:\n{self.stdout[-4000:]}"
        names = cells(lines[start])
        assert re.fullmatch(r"\|(\s*-+:?\s*\|)+", lines[start + 1]), f"no separator under {lines[start]!r}"
        rows = []
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                break
            values = cells(line)
            assert len(values) >= len(names), f"a row with fewer cells than the header: {line!r}"
            rows.append(dict(zip(names, values, strict=False)))
        assert rows, f"the table {header!r} has no rows:\n{self.stdout[-4000:]}"
        return rows


def cells(line: str) -> list[str]:
    # A row may carry a note after its last cell ("| ... | 4.0 | 2 errors"): only the cells count.
    return [cell.strip() for cell in line.strip().split("|")[1:-1]]


def number(text: str) -> float:
    """A table cell as a number: thousands separators, units and suffixes (%, x, s, ms, req/s) dropped."""
    match = re.fullmatch(r"(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)\s*(%|x|s|ms|MB|MiB|req/s)?", text.strip())
    assert match, f"not a number: {text!r}"
    return float(match.group(1).replace(",", ""))


def run_smoke(script: str, *args: str | Path, timeout: float = SMOKE_TIMEOUT_S) -> Ran:
    """Run ``benchmarks/<script> --smoke <args>`` from the repository root with this venv's Python;
    fails with the output's tail unless it exits 0."""
    argv = [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--smoke", *map(str, args)]
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    ran = Ran(proc.stdout, proc.stderr, time.monotonic() - started)
    print(f"{script} --smoke {' '.join(map(str, args))}: {ran.seconds:.1f} s")
    assert proc.returncode == 0, (
        f"{' '.join(argv[1:])} exited {proc.returncode} after {ran.seconds:.0f} s\n"
        f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}"
    )
    return ran
