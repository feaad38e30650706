"""Writing the artifact directory: variants' ONNX files, manifest.json, report.json, report.png.

What the files hold is :mod:`frugal.schema.artifact_format` (the contract every component reads
through). Everything is written into a temporary sibling directory and renamed into place in one
step, so a reader sees either no artifact or a complete one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from frugal.schema.artifact_format import MANIFEST, FileEntry, file_entry, read_manifest, sha256_file


def file_table(root: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, FileEntry]:
    """sha256 and size of every file under ``root`` (POSIX relative paths), manifest excluded."""
    table: dict[str, FileEntry] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in exclude:
            table[relative] = file_entry(path)
    return table


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
    manifest = read_manifest(root)
    bad = []
    for relative, entry in manifest.files.items():
        path = root / relative
        if not path.is_file() or path.stat().st_size != entry.size_bytes or sha256_file(path) != entry.sha256:
            bad.append(relative)
    return bad
