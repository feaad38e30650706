"""A real Google Cloud Storage emulator on loopback for tests: fake-gcs-server, used through ``gcsfs``
(fsspec).

The binary comes from ``scripts/fake-gcs-server-binary.sh`` (``go install`` from the Go module proxy,
cached outside the repository). One process serves the JSON API over plain HTTP on 127.0.0.1 on a free
port, with its objects in memory (``tests/emulator_process.py`` runs, probes and stops it).
fake-gcs-server checks no credentials at all: clients reach it anonymously (gcsfs ``token="anon"``), and
no test here can show a key refused; what it does check is that a bucket exists. If the server cannot
be built or started, :class:`EmulatorError` is raised with its log: a tier that cannot start its real
parts fails, it never skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gcsfs.core
from emulator_process import EmulatorProcess, installed, round_trip

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARY_SCRIPT = REPO_ROOT / "scripts" / "fake-gcs-server-binary.sh"
PROJECT = "frugal-test"
READINESS_BUCKET = "frugal-gcs-readiness-probe"


@dataclass
class GcsServer(EmulatorProcess):
    """fake-gcs-server in ``workdir``; use as a context manager or call :meth:`start` / :meth:`stop`."""

    name = "fake-gcs-server"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "-scheme", "http",
            "-host", self.host,
            "-port", str(self.port),
            "-backend", "memory",
            "-external-url", self.endpoint_url,  # the upload and media URLs it hands out point back here
            "-public-host", f"{self.host}:{self.port}",
            "-log-level", "info",
        ]  # fmt: skip

    def filesystem(self, **overrides: Any) -> gcsfs.core.GCSFileSystem:
        """A fresh (not fsspec-cached) anonymous filesystem on this server; ``overrides`` go to it. The
        stable gcsfs filesystem, as ``frugal.storage`` registers it for gs://."""
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "project": PROJECT,
            "token": "anon",
            "skip_instance_cache": True,
        }
        options.update(overrides)
        return gcsfs.core.GCSFileSystem(**options)

    def make_bucket(self, name: str) -> str:
        self.filesystem().mkdir(name)
        return name

    def probe(self) -> None:
        """An anonymous client creates a bucket, writes, reads and deletes an object."""
        round_trip(self.filesystem(retries=1), READINESS_BUCKET)


@contextlib.contextmanager
def running_gcs_server(workdir: Path) -> Iterator[GcsServer]:
    """Build (or find) fake-gcs-server, start it in ``workdir``, yield the running server, stop it."""
    with GcsServer(installed(BINARY_SCRIPT, "FAKE_GCS_SERVER"), workdir) as server:
        yield server
