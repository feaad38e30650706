"""The pure rules of a batch whose input or output is in an object store: which shard objects an
overwrite removes (by LastModified), an object's modification time in ns, and which URIs are read
where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from upath import UPath

from frugal.serving.batch.bucket_output import left_by_finished_run
from frugal.serving.batch.inputs import BatchError, data_location
from frugal.storage.object_io import modified_ns

SECOND = 10**9


def test_an_overwrite_removes_only_the_shard_objects_no_newer_than_the_predictions() -> None:
    finished = 1_000 * SECOND
    objects = [
        ("part-00001.npz", 990 * SECOND),
        ("part-00001.done", 991 * SECOND),
        ("part-00000.done", finished),  # written in the predictions' second: the finished run's
        ("part-00000.npz", 999 * SECOND),
        ("part-00002.npz", finished + 1),  # a concurrent worker's fresh shard: kept
        ("part-00002.done", 1_005 * SECOND),
        ("part-00003.npz", 995 * SECOND),  # its fresh marker is not there yet: the old part goes
    ]
    assert left_by_finished_run(objects, finished) == [
        "part-00000.done", "part-00000.npz", "part-00001.done", "part-00001.npz", "part-00003.npz",
    ]  # fmt: skip
    assert left_by_finished_run([], finished) == []
    assert left_by_finished_run([("part-00000.npz", finished + SECOND)], finished) == []


def test_an_objects_modification_time_is_exact_in_ns_whatever_form_it_takes() -> None:
    utc = datetime(2026, 12, 7, 12, 17, 18, tzinfo=UTC)
    assert modified_ns({"LastModified": utc}) == 1_796_645_838 * SECOND
    local = utc.astimezone(timezone(timedelta(hours=2)))
    assert modified_ns({"LastModified": local}) == 1_796_645_838 * SECOND  # the zone does not matter
    assert modified_ns({"LastModified": utc.replace(microsecond=123_456)}) == 1_796_645_838_123_456_000
    assert modified_ns({"last_modified": "2026-12-07T12:17:18Z"}) == 1_796_645_838 * SECOND
    assert modified_ns({"LastModified": "", "mtime": 1.5}) == 1_500_000_000
    with pytest.raises(KeyError, match="k has no modification time"):
        modified_ns({"name": "k", "size": 1})


def test_input_and_output_may_be_s3_and_everything_else_reads_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location = data_location("s3://bucket/prefix/in.parquet", "input")
    assert isinstance(location, UPath) and location.path == "bucket/prefix/in.parquet"
    assert data_location("/data/in.npz", "input") == Path("/data/in.npz")
    assert data_location("file:///data/out", "output") == Path("/data/out")
    monkeypatch.setenv("FRUGAL_PVC_ROOT", "/claims")
    assert data_location("pvc://claim/out", "output") == Path("/claims/claim/out")
    with pytest.raises(
        BatchError, match=r"output: ftp://h/x: a batch reads local paths, file://, pvc:// or s3://"
    ):
        data_location("ftp://h/x", "output")
