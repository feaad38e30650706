"""The artifact directory contract: variants' ONNX files, manifest.json, report.json, report.png.

Everything is written into a temporary sibling directory and renamed into place in one step, so a
reader sees either no artifact or a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root`` (POSIX relative paths), manifest excluded."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in exclude:
            table[relative] = {"sha256": sha256_file(path), "sizeBytes": path.stat().st_size}
    return table


def write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary directory next to ``final``, renamed to ``final`` only if the block succeeds."""
    final = final.absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verify(root: Path) -> list[str]:
    """Files whose sha256 or size differ from manifest.json (empty when the artifact is intact)."""
    manifest = json.loads((root / "manifest.json").read_text())
    bad = []
    for relative, entry in manifest["files"].items():
        path = root / relative
        if (
            not path.is_file()
            or path.stat().st_size != entry["sizeBytes"]
            or sha256_file(path) != entry["sha256"]
        ):
            bad.append(relative)
    return bad
