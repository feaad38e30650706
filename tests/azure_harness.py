"""A real Azure Blob Storage emulator on loopback for tests: Azurite's blob service, used through
``adlfs`` (fsspec).

Azurite comes from ``scripts/azurite-binary.sh`` (the npm package, cached outside the repository). One
``azurite-blob`` process listens on 127.0.0.1 on a free port, over HTTPS with a self-signed certificate
made here for 127.0.0.1 (adlfs builds ``https://<account_host>`` and nothing else, so the pods' own
settings, ``account_name`` and ``account_host``, are what the tests use; clients trust the certificate
through ``SSL_CERT_FILE``). It keeps its data in memory and knows one storage account, named
:data:`ACCOUNT`, whose key is random per server, so a test can show that no message echoes it. Azurite
checks the Shared Key signature of every request: a wrong key is refused as Azure refuses it. If it
cannot be installed or started, :class:`EmulatorError` is raised with its log: a tier that cannot start
its real parts fails, it never skips.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adlfs
from azure.storage.blob.aio import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from emulator_process import EmulatorProcess, installed, round_trip

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "azurite-binary.sh"
ACCOUNT = "frugaltest"
READINESS_CONTAINER = "frugal-azure-readiness-probe"


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (an IP address SAN) and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class AzuriteServer(EmulatorProcess):
    """``azurite-blob`` in ``workdir``; use as a context manager or call :meth:`start` / :meth:`stop`."""

    account_key: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(64)).decode(), repr=False
    )
    cert_path: Path | None = None
    key_path: Path | None = None

    name = "azurite"

    @property
    def account_host(self) -> str:
        """adlfs's ``account_host``: the blob service's URL after ``https://``."""
        return f"{self.host}:{self.port}/{ACCOUNT}"

    @property
    def endpoint(self) -> str:
        """What spec.objectStore.endpoint says for this store."""
        return f"https://{self.account_host}"

    def client_environment(self) -> dict[str, str]:
        """What a process needs besides its settings and keys: trust in the self-signed certificate."""
        assert self.cert_path is not None
        return {"SSL_CERT_FILE": str(self.cert_path)}

    def filesystem(self, **overrides: Any) -> adlfs.AzureBlobFileSystem:
        """A fresh (not fsspec-cached) filesystem with the account's key; ``overrides`` go to it. Its
        client trusts the certificate directly: this process imported aiohttp, whose default SSL context
        was made then, before SSL_CERT_FILE could name it (the components' processes read it at start)."""
        options: dict[str, Any] = {
            "account_name": ACCOUNT,
            "account_key": self.account_key,
            "account_host": self.account_host,
            "skip_instance_cache": True,
        }
        options.update(overrides)
        fs = adlfs.AzureBlobFileSystem(**options)
        fs.service_client = BlobServiceClient(
            account_url=fs.account_url,
            credential=options["account_key"],
            connection_verify=str(self.cert_path),
        )
        return fs

    def make_container(self, name: str) -> str:
        self.filesystem().mkdir(name)
        return name

    def prepare(self) -> None:
        self.cert_path, self.key_path = self_signed_certificate(self.workdir, self.host)

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--blobHost", self.host,
            "--blobPort", str(self.port),
            "--inMemoryPersistence",
            "--cert", str(self.cert_path),
            "--key", str(self.key_path),
            "--skipApiVersionCheck",  # the client library may be newer than the emulator
            "--disableTelemetry",
            "--debug", str(self.workdir / "azurite-debug.log"),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{self.account_key}", "HOME": str(self.workdir)}

    def probe(self) -> None:
        """The account's key creates a container, writes, reads and deletes a blob."""
        round_trip(self.filesystem(connection_timeout=2, read_timeout=10), READINESS_CONTAINER)


@contextlib.contextmanager
def running_azurite(workdir: Path) -> Iterator[AzuriteServer]:
    """Install (or find) Azurite, start it in ``workdir``, yield the running server, stop it."""
    with AzuriteServer(installed(INSTALL_SCRIPT, "AZURITE_BLOB"), workdir) as server:
        yield server
