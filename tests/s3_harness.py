"""A real S3 server on loopback for tests: SeaweedFS's S3 gateway, used through ``s3fs`` (fsspec).

The ``weed`` binary comes from ``scripts/seaweedfs-binary.sh`` (built from the Go module proxy and cached
outside the repository). One ``weed server`` process runs a master, a volume server, a filer and the S3
gateway, all on 127.0.0.1 on free ports, with its data in a temporary directory, and is stopped by
:meth:`S3Server.stop`. Two identities exist: ``admin`` (Admin, Read, Write, List, Tagging) and ``reader``
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
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import s3fs

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


class S3ServerError(RuntimeError):
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


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the kernel considers free right now (held open together so
    they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


@dataclass
class S3Server:
    """``weed server -s3`` in ``workdir``; use as a context manager or call :meth:`start` / :meth:`stop`."""

    weed: Path
    workdir: Path
    admin: S3Identity = field(default_factory=lambda: _random_identity("admin", ADMIN_ACTIONS))
    reader: S3Identity = field(default_factory=lambda: _random_identity("reader", READ_ONLY_ACTIONS))
    host: str = "127.0.0.1"
    s3_port: int = 0
    startup_seconds: float = 0.0
    _ports: dict[str, int] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None
    _socket_dir: Path | None = None
    _socket_dir_is_temporary: bool = False

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

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
        if self._log_file is not None:
            self._log_file.flush()
        if not self.log_path.exists():
            return "(no log written)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        if len(lines) <= head + tail:
            return "\n".join(lines)
        return "\n".join([*lines[:head], f"[... {len(lines) - head - tail} lines ...]", *lines[-tail:]])

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        data_dir = self.workdir / "data"
        data_dir.mkdir(exist_ok=True)
        config_path = self.workdir / "s3-identities.json"
        config_path.write_text(
            json.dumps({"identities": [self.admin.config_entry(), self.reader.config_entry()]}, indent=2)
        )
        config_path.chmod(0o600)
        self._socket_dir = self.workdir
        if len(str(self.workdir)) > MAX_SOCKET_DIR_LENGTH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="frugal-weed-"))
            self._socket_dir_is_temporary = True
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        self._ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.s3_port = self._ports["s3"]
        argv = [str(self.weed), "-logtostderr=true", "server", *self._server_flags(data_dir, config_path)]
        # weed reads WEED_* variables as flags and ./, ~/.seaweedfs/ for its TOML configs: keep both out.
        env = {key: value for key, value in os.environ.items() if not key.startswith("WEED_")}
        env["HOME"] = str(self.workdir)
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
        )
        try:
            self._wait_until_ready(time.monotonic() + READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _server_flags(self, data_dir: Path, config_path: Path) -> list[str]:
        ports, sockets = self._ports, self._socket_dir
        assert sockets is not None
        return [
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={data_dir}",
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
            f"-s3.config={config_path}",
            "-s3.autoCreateBucket=false",  # as AWS: a write to a missing bucket fails, it does not create it
            "-s3.iam=false",  # no IAM API on the S3 port: the identities are the static file's, nothing else
        ]

    def _wait_until_ready(self, deadline: float) -> None:
        """Ready means an admin client can create a bucket, write, read and delete an object: the S3
        port answering is not enough, the filer and a writable volume must be there too."""
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if not self._s3_port_answers():
                last_error = f"nothing answers on {self.endpoint_url}"
                time.sleep(0.1)
                continue
            try:
                self._round_trip_probe()
                return
            except Exception as error:  # any failure of the probe means "not yet"; the last one is reported
                last_error = f"{type(error).__name__}: {error}"
                time.sleep(0.25)
        self._raise_if_exited()
        raise S3ServerError(
            f"SeaweedFS's S3 gateway at {self.endpoint_url} was not ready within {READY_TIMEOUT_S:.0f} s "
            f"(last: {last_error}); log {self.log_path}:\n{self.log_excerpt()}"
        )

    def _s3_port_answers(self) -> bool:
        """Any HTTP answer (an anonymous request gets 403) means the gateway listens."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            opener.open(self.endpoint_url + "/", timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def _round_trip_probe(self) -> None:
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
        if not fs.exists(READINESS_BUCKET):
            fs.mkdir(READINESS_BUCKET)
        probe = f"{READINESS_BUCKET}/probe"
        fs.pipe_file(probe, b"ready")
        if fs.cat_file(probe) != b"ready":
            raise S3ServerError("the readiness probe read back something else")
        fs.rm_file(probe)
        fs.rmdir(READINESS_BUCKET)

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise S3ServerError(
                f"weed server exited with {code} while starting; log {self.log_path}:\n{self.log_excerpt()}"
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S; removes the gRPC sockets weed leaves in /tmp."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # `weed server` puts its in-process gRPC sockets at fixed /tmp paths, whatever the flags say.
        for name in ("master", "volume", "filer", "s3"):
            port = self._ports.get(f"{name}_grpc")
            if port:
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
        if self._socket_dir_is_temporary and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir_is_temporary = False

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_s3_server(workdir: Path) -> Iterator[S3Server]:
    """Build (or find) ``weed``, start it in ``workdir``, yield the running server, stop it."""
    with S3Server(ensure_weed_binary(), workdir) as server:
        yield server
