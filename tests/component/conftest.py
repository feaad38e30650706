"""Component tier fixtures shared across its modules.

``s3_server``: one real S3 server (SeaweedFS's S3 gateway on loopback, ``tests/s3_harness.py``) for the
session, started only when a test asks for it. If it cannot be built or started, those tests error: this
tier never skips.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Appended, not prepended: tests/ only has to provide s3_harness, never to shadow an installed module.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from s3_harness import S3Server, running_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server: ``endpoint_url``, ``admin`` / ``reader`` identities, ``filesystem(identity)``,
    ``make_bucket(name)``."""
    with running_s3_server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server
