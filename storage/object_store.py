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

import fsspec
from upath import UPath

# gcsfs's stable filesystem for gs:// and gcs://, not its experimental one (the default since gcsfs
# 2026): that one first asks a gRPC control plane for each bucket's layout (zonal, hierarchical), which
# emulators and private endpoints do not serve, and waits 60 s for it each time.
for _scheme in ("gs", "gcs"):
    fsspec.register_implementation(_scheme, "gcsfs.core.GCSFileSystem", clobber=True)

Provider = Literal["s3", "gcs", "azure"]
# Each scheme's provider: s3fs for s3://, gcsfs for gs:// and gcs://, adlfs for az:// and abfs://.
PROVIDERS: dict[str, Provider] = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
OBJECT_STORE_SCHEMES = tuple(PROVIDERS)
FSSPEC_S3_ENV = "FSSPEC_S3"
# fsspec applies FSSPEC_<PROTOCOL> to a filesystem class whose protocols include it (gcsfs: gs, gcs;
# adlfs: abfs, az, abfss), whichever scheme a URI uses.
FSSPEC_ENV: dict[Provider, str] = {"s3": FSSPEC_S3_ENV, "gcs": "FSSPEC_GCS", "azure": "FSSPEC_AZ"}
# The Secret's keys, which are also the environment variables botocore reads them from.
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
CREDENTIAL_KEYS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
# GCS: a service-account JSON key, the Secret's key `key.json`, which pods get as a read-only file
# named by GOOGLE_APPLICATION_CREDENTIALS (google-auth's default credentials, which gcsfs uses).
GCS_KEY_FILE = "key.json"
GCS_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
# Azure: any one of these Secret keys, which are also the environment variables adlfs reads.
AZURE_ACCOUNT_KEY = "AZURE_STORAGE_ACCOUNT_KEY"
AZURE_SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
AZURE_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
AZURE_CREDENTIAL_KEYS = (AZURE_ACCOUNT_KEY, AZURE_SAS_TOKEN, AZURE_CONNECTION_STRING)
# The Secret keys each provider's clients read, and those of them a Secret must hold (all, or any one).
PROVIDER_KEYS: dict[Provider, tuple[str, ...]] = {
    "s3": CREDENTIAL_KEYS,
    "gcs": (GCS_KEY_FILE,),
    "azure": AZURE_CREDENTIAL_KEYS,
}
REQUIRED_KEYS: dict[Provider, tuple[tuple[str, ...], Literal["all", "any"]]] = {
    "s3": ((ACCESS_KEY_ID, SECRET_ACCESS_KEY), "all"),
    "gcs": ((GCS_KEY_FILE,), "all"),
    "azure": (AZURE_CREDENTIAL_KEYS, "any"),
}

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
    """How to reach an object store: settings anyone may see, and keys that only go where needed.

    One set of settings serves whichever provider a URI's scheme names (:data:`PROVIDERS`): `endpoint`
    is s3fs's and gcsfs's ``endpoint_url`` and, for Azure, the blob service's ``https://`` URL (adlfs's
    ``account_host``, for Azurite or a sovereign cloud); `region` and `addressing_style` are S3's,
    `project` GCS's, `account_name` Azure's storage account."""

    endpoint: str | None = None
    region: str | None = None
    addressing_style: AddressingStyle = "auto"
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    project: str | None = None
    account_name: str | None = None

    def settings(self, provider: Provider = "s3") -> dict[str, Any]:
        """`provider`'s fsspec options without keys: what ``FSSPEC_S3``/``FSSPEC_GCS``/``FSSPEC_AZ``
        carries."""
        options: dict[str, Any] = {}
        if provider == "gcs":
            if self.endpoint:
                options["endpoint_url"] = self.endpoint
            if self.project:
                options["project"] = self.project
            return options
        if provider == "azure":
            if self.account_name:
                options["account_name"] = self.account_name
            if self.endpoint:
                options["account_host"] = self.endpoint.removeprefix("https://").rstrip("/")
            return options
        if self.endpoint:
            options["endpoint_url"] = self.endpoint
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        if self.addressing_style != "auto":
            options["config_kwargs"] = {"s3": {"addressing_style": self.addressing_style}}
        return options

    def environment(self, providers: Iterable[Provider] = ("s3",)) -> dict[str, str]:
        """The environment that gives a process these settings for each of `providers` (keys excluded:
        they come from a Secret)."""
        return {
            FSSPEC_ENV[provider]: json.dumps(settings, sort_keys=True)
            for provider in dict.fromkeys(providers)
            if (settings := self.settings(provider))
        }

    def storage_options(self, provider: Provider = "s3") -> dict[str, Any]:
        """`provider`'s fsspec options with the keys, for a process that holds them itself (the
        operator)."""
        options = self.settings(provider)
        keys = {
            "s3": {ACCESS_KEY_ID: "key", SECRET_ACCESS_KEY: "secret", SESSION_TOKEN: "token"},
            "azure": {
                AZURE_ACCOUNT_KEY: "account_key",
                AZURE_SAS_TOKEN: "sas_token",
                AZURE_CONNECTION_STRING: "connection_string",
            },
        }.get(provider, {})
        options.update(
            {option: self.credentials[key] for key, option in keys.items() if key in self.credentials}
        )
        if provider == "gcs" and GCS_KEY_FILE in self.credentials:
            options["token"] = json.loads(self.credentials[GCS_KEY_FILE])  # gcsfs: a service-account dict
        return options


def provider_of(uri: str) -> Provider | None:
    """The object-store provider of `uri`'s scheme (None: not an object store)."""
    return PROVIDERS.get(urlparse(uri).scheme)


def is_object_store(uri: str) -> bool:
    return urlparse(uri).scheme in OBJECT_STORE_SCHEMES


def location(uri: str | Path, store: ObjectStore | None = None) -> Location:
    """`uri` as a path: a ``Path`` for ``file://`` and plain paths, a ``UPath`` for an object store
    (with `store`'s settings and keys for the URI's provider when given; otherwise fsspec's
    configuration and the environment the provider's client reads)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else text)
    if parsed.scheme not in OBJECT_STORE_SCHEMES:
        raise ValueError(
            f"{text!r}: scheme {parsed.scheme!r} is not supported (use file://, s3://, gs://, az://)"
        )
    options = store.storage_options(PROVIDERS[parsed.scheme]) if store is not None else {}
    return UPath(text, **options)


def is_remote(path: Location) -> bool:
    """Whether `path` is an object (a UPath of an object store) rather than this machine's file."""
    return isinstance(path, UPath) and getattr(path, "protocol", "") in OBJECT_STORE_SCHEMES


def failure(uri: str, error: BaseException) -> ObjectStoreError:
    """An :class:`ObjectStoreError` naming the URI and the class of `error`, and what to check for it.
    Every provider's refusals take the same kinds (:func:`refusal_kind`); the message then names the
    kind and, in parentheses, the client's own class (never the error's text, which may quote a key)."""
    original = type(error).__name__
    kind = refusal_kind(error)
    missing_keys = {
        "gcs": f"a service-account key file named by {GCS_CREDENTIALS_ENV}",
        "azure": f"{AZURE_ACCOUNT_KEY}, {AZURE_SAS_TOKEN} or {AZURE_CONNECTION_STRING}",
    }.get(provider_of(uri) or "s3", f"{ACCESS_KEY_ID} and {SECRET_ACCESS_KEY}")
    hint = {
        "PermissionError": "the credentials were refused or do not allow this (check the Secret's keys "
        "and the bucket's policy)",
        "FileNotFoundError": "no such bucket or object",
        "NoCredentialsError": f"no keys were found (set {missing_keys})",
    }.get(kind, "")
    named = kind if kind == original else f"{kind} ({original})"
    failed = ObjectStoreError(f"{uri}: {named}" + (f": {hint}" if hint else ""))
    failed.kind = kind
    return failed


def refusal_kind(error: BaseException) -> str:
    """The class name of `error`, or for a provider's own refusal the kind it stands for: a refused
    or insufficient key (HTTP 401/403, azure-core's ClientAuthenticationError, azure-storage's
    AzureSigningError for a key that is not base64, gcsfs's ``Forbidden`` OSError) is ``PermissionError``, no such bucket, container or object (404, ResourceNotFoundError)
    ``FileNotFoundError``, no keys at all (google-auth's DefaultCredentialsError, azure-identity's
    CredentialUnavailableError) ``NoCredentialsError``."""
    kind = type(error).__name__
    if kind in REFUSALS:
        return kind
    status = next(
        (v for a in ("status_code", "code") if isinstance(v := getattr(error, a, None), int)), None
    )  # azure-core's HttpResponseError.status_code, gcsfs's HttpError.code
    if kind in ("ClientAuthenticationError", "AzureSigningError") or status in (401, 403):
        return "PermissionError"
    if type(error) is OSError and str(error).startswith("Forbidden"):  # gcsfs's answer to a 403
        return "PermissionError"
    if kind in ("ResourceNotFoundError", "ContainerNotFound") or status == 404:
        return "FileNotFoundError"
    if kind in ("DefaultCredentialsError", "CredentialUnavailableError"):
        return "NoCredentialsError"
    return kind


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
    except FileNotFoundError as exc:  # gcsfs and adlfs: no such object, or no such bucket or container
        if PROVIDERS.get(path.protocol) == "s3" or not _bucket_exists(path):
            raise failure(str(path), exc) from None
    except Exception as exc:
        raise failure(str(path), exc) from None


def _bucket_exists(path: UPath) -> bool:
    bucket = path.path.split("/", 1)[0]
    try:
        return bool(path.fs.exists(bucket))
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
