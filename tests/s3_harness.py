"""A real S3 server on loopback for tests: SeaweedFS's S3 gateway, used through ``s3fs`` (fsspec).

The ``weed`` binary comes from ``scripts/seaweedfs-binary.sh`` (built from the Go module proxy and cached
outside the repository). One ``weed server`` process runs a master, a volume server, a filer and the S3
gateway, all on 127.0.0.1 on free ports, with its data in a temporary directory, and is stopped by
:meth:`S3Server.stop` (``tests/emulator_process.py`` runs, probes and stops it). Two identities exist: ``admin`` (Admin, Read, Write, List, Tagging) and ``reader``
(Read, List); their keys are random per server. If the server cannot be built or started,
:class:`S3ServerError` is raised with an excerpt of its log: a tier that cannot start its real parts fails,
it never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import s3fs
from emulator_process import EmulatorError, EmulatorProcess, free_ports, round_trip

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARY_SCRIPT = REPO_ROOT / "scripts" / "seaweedfs-binary.sh"
REGION = "us-east-1"
READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0
# A unix socket path must fit in sun_path (108 bytes); a deep pytest basetemp may not.
MAX_SOCKET_DIR_LENGTH = 80
READINESS_BUCKET = "frugal-s3-readiness-probe"
ADMIN_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")
READ_ONLY_ACTIONS = ("Read", "List")


class S3ServerError(EmulatorError):
    """The S3 server could not be built or started."""


@dataclass(frozen=True)
class S3Identity:
    """One identity of the server's static S3 config (``-s3.config``)."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...]

    def config_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }


def _random_identity(name: str, actions: tuple[str, ...]) -> S3Identity:
    # Random secrets let a test prove that an error message does not echo the secret back.
    return S3Identity(
        name=name,
        access_key=f"FRUGAL{name.upper()}{secrets.token_hex(6).upper()}",
        secret_key=secrets.token_urlsafe(30),
        actions=actions,
    )


def ensure_weed_binary() -> Path:
    """Run the (idempotent, seconds when warm) build script and read the ``WEED=`` path it prints."""
    proc = subprocess.run(["bash", str(BINARY_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise S3ServerError(f"{BINARY_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if "WEED" not in paths:
        raise S3ServerError(
            f"{BINARY_SCRIPT} did not print WEED=<path>:\n{proc.stdout}\n{proc.stderr[-3000:]}"
        )
    weed = Path(paths["WEED"])
    if not os.access(weed, os.X_OK):
        raise S3ServerError(f"{BINARY_SCRIPT} printed WEED={weed}, which is not an executable file")
    return weed


@dataclass
class S3Server(EmulatorProcess):
    """``weed server -s3`` in ``workdir`` (``binary``, also ``weed``: the weed executable); use as a context
    manager or call :meth:`start` / :meth:`stop`. ``port``, also ``s3_port``, is the S3 gateway's."""

    admin: S3Identity = field(default_factory=lambda: _random_identity("admin", ADMIN_ACTIONS))
    reader: S3Identity = field(default_factory=lambda: _random_identity("reader", READ_ONLY_ACTIONS))
    _ports: dict[str, int] = field(default_factory=dict)
    _socket_dir: Path | None = None
    _socket_dir_is_temporary: bool = False

    name = "weed server"
    error = S3ServerError
    ready_timeout_s = READY_TIMEOUT_S
    stop_grace_s = STOP_GRACE_S

    @property
    def weed(self) -> Path:
        return self.binary

    @property
    def s3_port(self) -> int:
        return self.port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def description(self) -> str:
        return f"SeaweedFS's S3 gateway at {self.endpoint_url}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    @property
    def identities(self) -> dict[str, S3Identity]:
        return {self.admin.name: self.admin, self.reader.name: self.reader}

    def filesystem(self, identity: S3Identity | str = "admin", **overrides: Any) -> s3fs.S3FileSystem:
        """A fresh (not fsspec-cached) ``S3FileSystem`` signed with ``identity``'s keys; ``overrides`` go
        to the constructor (e.g. ``secret=`` to try a wrong key)."""
        if isinstance(identity, str):
            identity = self.identities[identity]
        options: dict[str, Any] = {
            "key": identity.access_key,
            "secret": identity.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            "config_kwargs": {"s3": {"addressing_style": "path"}},
            "skip_instance_cache": True,
        }
        options.update(overrides)
        return s3fs.S3FileSystem(**options)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` as the admin identity; returns the name, ready for ``f"{name}/key"``."""
        self.filesystem(self.admin).mkdir(name)
        return name

    def log_excerpt(self, head: int = 10, tail: int = 60) -> str:
        """The log's first and last lines: a bad flag's error comes first, before a long usage text."""
        return super().log_excerpt(head, tail)

    # ---- lifecycle (EmulatorProcess's, with weed's ports, sockets and config) -------------------------

    @property
    def _data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def _config_path(self) -> Path:
        return self.workdir / "s3-identities.json"

    def allocate_ports(self) -> None:
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        self._ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.port = self._ports["s3"]

    def prepare(self) -> None:
        self._data_dir.mkdir(exist_ok=True)
        self._config_path.write_text(
            json.dumps({"identities": [self.admin.config_entry(), self.reader.config_entry()]}, indent=2)
        )
        self._config_path.chmod(0o600)
        self._socket_dir = self.workdir
        if len(str(self.workdir)) > MAX_SOCKET_DIR_LENGTH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="frugal-weed-"))
            self._socket_dir_is_temporary = True

    def environment(self) -> dict[str, str]:
        # weed reads WEED_* variables as flags and ./, ~/.seaweedfs/ for its TOML configs: keep both out.
        env = {key: value for key, value in os.environ.items() if not key.startswith("WEED_")}
        env["HOME"] = str(self.workdir)
        return env

    def argv(self) -> list[str]:
        ports, sockets = self._ports, self._socket_dir
        assert sockets is not None
        return [
            str(self.binary),
            "-logtostderr=true",
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={self._data_dir}",
            "-master.peers=none",  # single master: no Raft quorum wait
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.volumeSizeLimitMB=64",  # small sparse volumes: a bucket's collection grows several
            "-master.telemetry=false",  # on by default; it would post to telemetry.seaweedfs.com
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=100",
            "-volume.minFreeSpace=512MiB",  # not the default 1%: a percentage of a shared disk is arbitrary
            "-volume.preStopSeconds=0",  # default 10: a SIGTERM would wait that long
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={sockets / 's3.sock'}",
            "-s3.port.iceberg=0",  # default 8181: a fixed port, and a catalog nobody here uses
            "-s3.port.lance=0",  # default 9101: likewise
            f"-s3.config={self._config_path}",
            "-s3.autoCreateBucket=false",  # as AWS: a write to a missing bucket fails, it does not create it
            "-s3.iam=false",  # no IAM API on the S3 port: the identities are the static file's, nothing else
        ]

    def _port_open(self) -> bool:
        """Any HTTP answer (an anonymous request gets 403) means the gateway listens."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            opener.open(self.endpoint_url + "/", timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def probe(self) -> None:
        """Ready means an admin client can create a bucket, write, read and delete an object: the S3
        port answering is not enough, the filer and a writable volume must be there too."""
        # Short timeouts and no retries: a probe that hangs would eat the start-up deadline.
        fs = self.filesystem(
            self.admin,
            config_kwargs={
                "s3": {"addressing_style": "path"},
                "connect_timeout": 2,
                "read_timeout": 10,
                "retries": {"max_attempts": 1},
            },
        )
        round_trip(fs, READINESS_BUCKET)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S; removes the gRPC sockets weed leaves in /tmp."""
        super().stop()
        # `weed server` puts its in-process gRPC sockets at fixed /tmp paths, whatever the flags say.
        for name in ("master", "volume", "filer", "s3"):
            port = self._ports.get(f"{name}_grpc")
            if port:
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
        if self._socket_dir_is_temporary and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir_is_temporary = False


@contextlib.contextmanager
def running_s3_server(workdir: Path) -> Iterator[S3Server]:
    """Build (or find) ``weed``, start it in ``workdir``, yield the running server, stop it."""
    with S3Server(ensure_weed_binary(), workdir) as server:
        yield server
