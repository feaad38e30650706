"""Where artifacts, models and data live: this machine's filesystem or an object store, one path type.

A location is a ``pathlib.Path`` for ``file:///dir`` and plain paths, and a ``upath.UPath`` (pathlib's
API over fsspec, here s3fs) for ``s3://bucket/key``; the artifact readers and writers take either.

Connection settings, never secrets, travel as fsspec's own configuration: :meth:`ObjectStore.environment`
is ``FSSPEC_S3``, a JSON object of s3fs options (endpoint, region, addressing style) that fsspec applies
to every S3 filesystem a process opens. Keys come from the environment botocore reads
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), which pods take from a
Secret; the operator passes them explicitly (:meth:`ObjectStore.storage_options`).

Object stores have no rename, so a directory is never moved into place. What holds instead:

* one object's PUT is atomic: a reader sees no object, or the whole of one (S3 has read-after-write
  consistency), and a multipart upload is invisible until it completes;
* a directory is published by :func:`publish` with every file first and ``manifest.json`` last. Readers
  (the operator, profiling, serving) start from ``manifest.json``, so each file it lists is already
  whole, and a downloaded file is checked against the manifest's sha256 before anything loads it;
* no two writers share an object: every key is under its ModelDeployment's ``gen-<N>`` prefix, and a
  profile is named by its HardwareProfile. A retried pod writes the same names again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from upath import UPath

OBJECT_STORE_SCHEMES = ("s3",)
FSSPEC_S3_ENV = "FSSPEC_S3"
# The Secret's keys, which are also the environment variables botocore reads them from.
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
CREDENTIAL_KEYS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)

# Errors retrying cannot fix: the keys or the policy refused, no such bucket or object, no keys at all.
REFUSALS = frozenset(
    {"PermissionError", "FileNotFoundError", "NoCredentialsError", "PartialCredentialsError"}
)

AddressingStyle = Literal["auto", "path", "virtual"]
Location = Path | UPath  # a file or directory here, or an object or prefix in a store


class ObjectStoreError(OSError):
    """An object store refused or failed a read or write; the message names the URI and the error class
    (never a key)."""

    kind: str = ""  # the class name of the error it stands for

    @property
    def refused(self) -> bool:
        """Whether this is bad input that retrying cannot fix (keys, policy, bucket), not a failed run
        (an unreachable endpoint, a timeout, a server error)."""
        return self.kind in REFUSALS


@dataclass(frozen=True)
class ObjectStore:
    """How to reach an S3-compatible store: settings anyone may see, and keys that only go where needed."""

    endpoint: str | None = None
    region: str | None = None
    addressing_style: AddressingStyle = "auto"
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)

    def settings(self) -> dict[str, Any]:
        """s3fs options without keys: what ``FSSPEC_S3`` carries."""
        options: dict[str, Any] = {}
        if self.endpoint:
            options["endpoint_url"] = self.endpoint
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        if self.addressing_style != "auto":
            options["config_kwargs"] = {"s3": {"addressing_style": self.addressing_style}}
        return options

    def environment(self) -> dict[str, str]:
        """The environment that gives a process these settings (keys excluded: they come from a Secret)."""
        settings = self.settings()
        return {FSSPEC_S3_ENV: json.dumps(settings, sort_keys=True)} if settings else {}

    def storage_options(self) -> dict[str, Any]:
        """s3fs options with the keys, for a process that holds them itself (the operator)."""
        options = self.settings()
        if ACCESS_KEY_ID in self.credentials:
            options["key"] = self.credentials[ACCESS_KEY_ID]
        if SECRET_ACCESS_KEY in self.credentials:
            options["secret"] = self.credentials[SECRET_ACCESS_KEY]
        if SESSION_TOKEN in self.credentials:
            options["token"] = self.credentials[SESSION_TOKEN]
        return options


def is_object_store(uri: str) -> bool:
    return urlparse(uri).scheme in OBJECT_STORE_SCHEMES


def location(uri: str | Path, store: ObjectStore | None = None) -> Location:
    """`uri` as a path: a ``Path`` for ``file://`` and plain paths, a ``UPath`` for an object store
    (with `store`'s settings and keys when given; otherwise fsspec's configuration and botocore's
    environment)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else text)
    if parsed.scheme not in OBJECT_STORE_SCHEMES:
        raise ValueError(f"{text!r}: scheme {parsed.scheme!r} is not supported (use file://, s3://)")
    options = store.storage_options() if store is not None else {}
    return UPath(text, **options)


def is_remote(path: Location) -> bool:
    """Whether `path` is an object (a UPath of an object store) rather than this machine's file."""
    return isinstance(path, UPath) and getattr(path, "protocol", "") in OBJECT_STORE_SCHEMES


def failure(uri: str, error: BaseException) -> ObjectStoreError:
    """An :class:`ObjectStoreError` naming the URI and the class of `error`, and what to check for it."""
    kind = type(error).__name__
    hint = {
        "PermissionError": "the credentials were refused or do not allow this (check the Secret's keys "
        "and the bucket's policy)",
        "FileNotFoundError": "no such bucket or object",
        "NoCredentialsError": "no keys were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
    }.get(kind, "")
    failed = ObjectStoreError(f"{uri}: {kind}" + (f": {hint}" if hint else ""))
    failed.kind = kind
    return failed


@contextlib.contextmanager
def _replacing(target: Path, suffix: str) -> Iterator[str]:
    """A temporary file beside `target`, renamed over it when the block ends and removed if it raises:
    a crash leaves no partial file under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def local_files(directory: Path) -> list[str]:
    """Every regular file under `directory`, as sorted POSIX paths relative to it."""
    return sorted(
        PurePosixPath(p.relative_to(directory)).as_posix() for p in directory.rglob("*") if p.is_file()
    )


def remove(path: Location) -> None:
    """Delete one file or object; one that is not there is no error. An object store's refusal (or a
    missing bucket) is an :class:`ObjectStoreError`."""
    if not isinstance(path, UPath):
        path.unlink(missing_ok=True)
        return
    try:  # S3 answers a delete of a missing key with success; FileNotFoundError means no bucket
        path.fs.rm_file(path.path)
    except Exception as exc:
        raise failure(str(path), exc) from None


def publish_order(files: Iterable[str], last: Iterable[str] = ("manifest.json",)) -> list[str]:
    """`files` in upload order: the ones named in `last` after all others, in `last`'s order."""
    present = list(files)
    tail = [name for name in last if name in present]
    return [name for name in present if name not in tail] + tail


def publish(directory: Path, destination: Location, last: Iterable[str] = ("manifest.json",)) -> list[str]:
    """Upload every file under the local `directory` to `destination`, the files named in `last` after
    all others (a reader that starts from them finds every other file whole). Those files are deleted at
    `destination` first, so a reader never pairs an earlier run's manifest with this run's files, and
    an upload that fails midway leaves none of them. Returns what it wrote."""
    last = tuple(last)
    ordered = publish_order(local_files(directory), last)
    for name in ordered:
        if name in last:
            remove(destination / name)
    for relative in ordered:
        target = destination / relative
        if not isinstance(target, UPath):
            with _replacing(target, ".tmp") as temporary:
                shutil.copyfile(directory / relative, temporary)
            continue
        try:
            target.fs.put_file(str(directory / relative), target.path)  # one PUT: whole or nothing
        except Exception as exc:
            raise failure(str(target), exc) from None
    return ordered


def download(source: Location, relative_files: Iterable[str], target: Path) -> list[Path]:
    """Copy each of `relative_files` from `source` (an object store or a directory) into `target`, each
    through a temporary name and a rename (a crash leaves no partial file under its real name).
    Returns the local paths. Raises FileNotFoundError for a missing object, ObjectStoreError for a
    refusal; a name that climbs out of `source` is a ValueError."""
    written = []
    for relative in relative_files:
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"{relative!r} is not a path inside {source}")
        local, remote = target / pure, source / relative
        with _replacing(local, ".part") as temporary:
            if isinstance(remote, UPath):
                _get(remote, temporary)
            else:
                shutil.copyfile(remote, temporary)
        written.append(local)
    return written


def _get(remote: UPath, local: str) -> None:
    try:
        remote.fs.get_file(remote.path, local)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise failure(str(remote), exc) from None
