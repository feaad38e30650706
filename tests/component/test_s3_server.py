"""A real S3 server (SeaweedFS's S3 gateway on loopback) through ``s3fs``: the behaviour later features
that keep models and artifacts in s3:// buckets will rely on, and the errors their users will see.

Nothing is mocked: ``s3_server`` (tests/component/conftest.py) builds and starts ``weed server -s3``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest
import s3fs
from s3_harness import S3Server

MIB = 1024 * 1024


@pytest.fixture
def bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket per test, so listings and keys never see another test's objects."""
    name = s3_server.make_bucket(f"frugal-test-{uuid.uuid4().hex[:12]}")
    yield name
    s3_server.filesystem("admin").rm(name, recursive=True)


@pytest.fixture
def admin_fs(s3_server: S3Server) -> s3fs.S3FileSystem:
    return s3_server.filesystem("admin")


def fresh_view(s3_server: S3Server, identity: str = "admin") -> s3fs.S3FileSystem:
    """Another client, with no listing cache shared with the writer: what a second process would see."""
    return s3_server.filesystem(identity)


def test_written_object_reads_back_byte_identical(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards the basic contract: bytes in (every byte value, not text) are the bytes out, through both
    the one-shot and the file-object APIs, and the size the server reports is the size written."""
    payload = bytes(range(256)) * 256 + os.urandom(4096)
    admin_fs.pipe_file(f"{bucket}/blob.bin", payload)
    with admin_fs.open(f"{bucket}/streamed.bin", "wb") as out:
        out.write(payload[:1000])
        out.write(payload[1000:])

    reader = fresh_view(s3_server)
    assert reader.cat_file(f"{bucket}/blob.bin") == payload
    with reader.open(f"{bucket}/streamed.bin", "rb") as stream:
        assert stream.read() == payload
    assert reader.info(f"{bucket}/blob.bin")["size"] == len(payload)


def test_listing_a_prefix_shows_its_objects_and_pseudo_directories(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards prefix listing, which model discovery will use: ``ls`` shows one level (a deeper prefix as a
    directory), ``find`` every key below, and a sibling prefix that shares the first letters stays out."""
    for key in ("models/a.bin", "models/b.bin", "models/sub/c.bin", "models-old/d.bin", "other/e.bin"):
        admin_fs.pipe_file(f"{bucket}/{key}", key.encode())

    reader = fresh_view(s3_server)
    listed = {entry["name"]: entry["type"] for entry in reader.ls(f"{bucket}/models", detail=True)}
    assert listed == {
        f"{bucket}/models/a.bin": "file",
        f"{bucket}/models/b.bin": "file",
        f"{bucket}/models/sub": "directory",
    }
    assert reader.find(f"{bucket}/models") == [
        f"{bucket}/models/a.bin",
        f"{bucket}/models/b.bin",
        f"{bucket}/models/sub/c.bin",
    ]
    assert reader.glob(f"{bucket}/models*/*.bin") == [
        f"{bucket}/models-old/d.bin",
        f"{bucket}/models/a.bin",
        f"{bucket}/models/b.bin",
    ]


def test_multi_mib_object_round_trips_through_a_multipart_upload(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards large artifacts: 13 MiB written in 5 MiB parts (s3fs's multipart upload; SeaweedFS stores
    it as several chunks) reads back identical, whole and by byte range."""
    payload = os.urandom(13 * MIB)
    with admin_fs.open(f"{bucket}/weights.bin", "wb", block_size=5 * MIB) as out:
        for start in range(0, len(payload), MIB):
            out.write(payload[start : start + MIB])

    reader = fresh_view(s3_server)
    assert reader.info(f"{bucket}/weights.bin")["size"] == len(payload)
    read_back = reader.cat_file(f"{bucket}/weights.bin")
    assert hashlib.sha256(read_back).hexdigest() == hashlib.sha256(payload).hexdigest()
    # A range that straddles the 5 MiB part boundary and SeaweedFS's 4 MiB chunk boundary.
    assert (
        reader.cat_file(f"{bucket}/weights.bin", start=4 * MIB - 10, end=5 * MIB + 10)
        == payload[4 * MIB - 10 : 5 * MIB + 10]
    )


def test_an_object_being_written_is_invisible_until_close(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards the property atomic publishing can rest on: an S3 object appears whole at ``close()`` (the
    PUT, or CompleteMultipartUpload once parts are already on the server), and an overwrite shows readers
    the old object until then, so writing straight to the final key needs no rename."""
    path = f"{bucket}/model.bin"
    admin_fs.pipe_file(path, b"old")
    new = os.urandom(11 * MIB)
    out = admin_fs.open(path, "wb", block_size=5 * MIB)
    try:
        out.write(new)
        out.flush()  # uploads the full 5 MiB parts now
        assert out.mpu is not None, "expected a multipart upload to be in progress"
        assert fresh_view(s3_server).cat_file(path) == b"old"
    finally:
        out.close()
    assert fresh_view(s3_server).cat_file(path) == new


def test_copy_and_move_are_server_side_copy_then_delete(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Records what s3fs does for rename, since object stores have none: ``copy`` is a server-side
    CopyObject (both keys exist after it); ``mv`` of a key is that copy followed by a delete of the source,
    so it replaces an existing destination whole but is two requests, not one atomic rename. ``mv`` of a
    prefix with ``recursive=True`` is unusable (a long-standing s3fs/fsspec behaviour, not this server's):
    the expanded paths include the pseudo-directory itself, whose CopyObject is NoSuchKey, so it raises
    FileNotFoundError after copying the keys and before deleting any: both prefixes are left full."""
    admin_fs.pipe_file(f"{bucket}/staging/model.bin", b"new weights")
    admin_fs.pipe_file(f"{bucket}/live/model.bin", b"old weights")

    admin_fs.copy(f"{bucket}/staging/model.bin", f"{bucket}/copy/model.bin")
    view = fresh_view(s3_server)
    assert view.cat_file(f"{bucket}/staging/model.bin") == b"new weights"
    assert view.cat_file(f"{bucket}/copy/model.bin") == b"new weights"

    admin_fs.mv(f"{bucket}/staging/model.bin", f"{bucket}/live/model.bin")
    view = fresh_view(s3_server)
    assert view.cat_file(f"{bucket}/live/model.bin") == b"new weights"
    assert not view.exists(f"{bucket}/staging/model.bin")

    for name in ("a", "b"):
        admin_fs.pipe_file(f"{bucket}/run-1/{name}", name.encode())
    with pytest.raises(FileNotFoundError, match="The specified key does not exist"):
        admin_fs.mv(f"{bucket}/run-1", f"{bucket}/run-2", recursive=True)
    view = fresh_view(s3_server)
    assert view.find(f"{bucket}/run-2") == [f"{bucket}/run-2/a", f"{bucket}/run-2/b"]
    assert view.find(f"{bucket}/run-1") == [f"{bucket}/run-1/a", f"{bucket}/run-1/b"]


def test_wrong_credentials_are_a_permission_error_that_does_not_leak_the_secret(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards what a user with a mistyped secret or access key sees: a PermissionError for a read, a
    listing and a write, and neither the real nor the wrong secret anywhere in it. A request with a body
    in its answer names the cause (SignatureDoesNotMatch, InvalidAccessKeyId); s3fs reads an object with
    a HEAD first, whose 403 has no body, so a read says only "Forbidden"."""
    admin_fs.pipe_file(f"{bucket}/object", b"x")
    wrong_secret = "wrong-" + os.urandom(12).hex()
    wrong_secret_fs = s3_server.filesystem("admin", secret=wrong_secret)
    unknown_key_fs = s3_server.filesystem("admin", key="FRUGALNOSUCHKEY", secret=wrong_secret)
    signature_mismatch = "The request signature we calculated does not match the signature you provided"

    cases = [
        (lambda: wrong_secret_fs.cat_file(f"{bucket}/object"), "Forbidden"),
        (lambda: wrong_secret_fs.exists(f"{bucket}/object"), "Forbidden"),  # raises: not a quiet False
        (lambda: wrong_secret_fs.ls(bucket), signature_mismatch),
        (lambda: wrong_secret_fs.pipe_file(f"{bucket}/other", b"y"), signature_mismatch),
        (lambda: unknown_key_fs.ls(bucket), "The access key ID you provided does not exist in our records"),
    ]
    for attempt, expected_message in cases:
        with pytest.raises(PermissionError) as caught:
            attempt()
        message = f"{caught.value!s} {caught.value!r} {caught.value.__cause__!s}"
        assert expected_message in str(caught.value)
        assert wrong_secret not in message
        assert s3_server.admin.secret_key not in message


def test_read_only_identity_reads_and_lists_but_cannot_write_or_delete(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards least privilege with the server's own access control: the ``reader`` identity (Read, List)
    reads and lists what ``admin`` wrote, and a write, a delete or a bucket creation by it is an
    AccessDenied PermissionError that changes nothing, except through ``rm()``, which s3fs lets fail
    silently."""
    admin_fs.pipe_file(f"{bucket}/model.bin", b"weights")
    reader = s3_server.filesystem("reader")
    assert reader.cat_file(f"{bucket}/model.bin") == b"weights"
    assert reader.ls(bucket, detail=False) == [f"{bucket}/model.bin"]

    with pytest.raises(PermissionError, match="Access Denied"):
        reader.pipe_file(f"{bucket}/model.bin", b"tampered")
    # A small write through a file object is one PUT at close(): the denial surfaces there.
    with pytest.raises(PermissionError, match="Access Denied"), reader.open(f"{bucket}/new.bin", "wb") as out:
        out.write(b"tampered")
    with pytest.raises(PermissionError, match="Access Denied"):
        reader.rm_file(f"{bucket}/model.bin")
    with pytest.raises(PermissionError, match="Access Denied"):
        reader.mkdir(f"frugal-reader-{uuid.uuid4().hex[:8]}")
    # s3fs's rm() is a DeleteObjects call whose per-key errors it ignores: a denied delete is silent,
    # it only reports nothing deleted. Code that must know checks the returned list or rm_file().
    assert reader.rm(f"{bucket}/model.bin") == []
    assert fresh_view(s3_server).ls(bucket, detail=False) == [f"{bucket}/model.bin"]
    assert fresh_view(s3_server).cat_file(f"{bucket}/model.bin") == b"weights"


def test_a_missing_bucket_or_key_is_file_not_found(
    s3_server: S3Server, admin_fs: s3fs.S3FileSystem, bucket: str
) -> None:
    """Guards the error a wrong s3:// URI gives: FileNotFoundError for a read or listing of a bucket that
    does not exist, for a write into one (the server is started without auto-creating buckets, like AWS),
    and for a missing key in an existing bucket; ``exists`` is False rather than an error."""
    missing = f"frugal-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(FileNotFoundError):
        admin_fs.cat_file(f"{missing}/model.bin")
    with pytest.raises(FileNotFoundError):
        admin_fs.ls(missing)
    with pytest.raises(FileNotFoundError):
        admin_fs.pipe_file(f"{missing}/model.bin", b"x")
    with pytest.raises(FileNotFoundError):
        admin_fs.cat_file(f"{bucket}/no-such-key")
    assert not admin_fs.exists(f"{missing}/model.bin")
    assert not admin_fs.exists(missing)
    assert missing not in fresh_view(s3_server).ls("", detail=False)
