"""The S3 server `cold_start.py --source bucket|bucket-refetch|node-cache` reads: SeaweedFS's S3
gateway on loopback (the tests' harness, ``tests/s3_harness.py``) with one bucket, and what a serving
process needs in its environment to read it, as a pod's container gets it."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from frugal.storage import object_store
from frugal.storage.object_store import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ObjectStore

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "frugal-cold-start"


@dataclass(frozen=True)
class Bucket:
    """The S3 server this run publishes to, and what a serving process needs to read from it."""

    store: ObjectStore
    endpoint: str
    data_dir: Path  # the server's own files (evicted with --evict-page-cache)
    startup_s: float
    env: dict[str, str] = field(repr=False)  # FSSPEC_S3 and the keys, as a pod's container gets them

    def publish(self, model: str, directory: Path, files: Sequence[Path]) -> str:
        """`manifest.json` and the variant's `files` under ``s3://frugal-cold-start/<model>``; returns the
        URI. (Only those: the rest of the directory, MiniLM's other variants, would not be fetched.)"""
        uri = f"s3://{BUCKET}/{model}"
        with tempfile.TemporaryDirectory(prefix="frugal-publish-") as staging:
            for path in [directory / "manifest.json", *files]:
                link = Path(staging) / path.relative_to(directory)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
            object_store.publish(Path(staging), object_store.location(uri, self.store))
        return uri


@contextlib.contextmanager
def s3_bucket(workdir: Path) -> Iterator[Bucket]:
    """SeaweedFS's S3 gateway on loopback (the tests' harness, ``tests/s3_harness.py``) with one bucket,
    stopped on exit."""
    sys.path.append(str(REPO_ROOT / "tests"))
    from s3_harness import REGION, running_s3_server

    with running_s3_server(workdir) as server:
        admin = server.identities["admin"]
        keys = {ACCESS_KEY_ID: admin.access_key, SECRET_ACCESS_KEY: admin.secret_key}
        store = ObjectStore(
            endpoint=server.endpoint_url, region=REGION, addressing_style="path", credentials=keys
        )
        server.make_bucket(BUCKET)
        yield Bucket(
            store,
            server.endpoint_url,
            workdir / "data",
            server.startup_seconds,
            {**store.environment(), **keys},
        )
