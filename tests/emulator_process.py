"""One emulator process on loopback for the test tiers, the lifecycle the storage harnesses share
(``tests/gcs_harness.py``, ``tests/azure_harness.py``): start it on a free port with its log in its
work directory, wait until a real round trip through the client succeeds (a listening port is not
enough), report the log when it exits or never gets ready, stop it (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from s3_harness import free_ports

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not be installed or started."""


@dataclass
class EmulatorProcess:
    """Subclasses say how to run (:meth:`argv`, :meth:`environment`) and probe (:meth:`probe`) it."""

    binary: Path
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    startup_seconds: float = 0.0
    _process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    name: ClassVar[str] = "emulator"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None  # this process's own

    def prepare(self) -> None:
        """Anything to write into the work directory before the process starts."""

    def probe(self) -> None:
        """One round trip through the client: raises until the emulator serves requests."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_excerpt(self, tail: int = 60) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        self.prepare()
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.argv(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=self.environment(),
        )
        try:
            self._wait_until_ready(time.monotonic() + READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_until_ready(self, deadline: float) -> None:
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if not self._port_open():  # clients retry a refused connection for long: ask the port first
                last_error = f"nothing listens on {self.host}:{self.port}"
                time.sleep(0.1)
                continue
            try:
                self.probe()
                return
            except EmulatorError:
                raise
            except Exception as error:  # any failure of the probe means "not yet"; the last one is reported
                last_error = f"{type(error).__name__}: {error}"
                time.sleep(0.25)
        self._raise_if_exited()
        raise EmulatorError(
            f"{self.name} on {self.host}:{self.port} was not ready within {READY_TIMEOUT_S:.0f} s "
            f"(last: {last_error}); log {self.log_path}:\n{self.log_excerpt()}"
        )

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            return sock.connect_ex((self.host, self.port)) == 0

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise EmulatorError(
                f"{self.name} exited with {code} while starting; log {self.log_path}:\n{self.log_excerpt()}"
            )

    def stop(self) -> None:
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


def installed(script: Path, variable: str) -> Path:
    """Run an (idempotent, fast when warm) install script and read the ``VARIABLE=<path>`` it prints."""
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EmulatorError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    path = Path(paths.get(variable, ""))
    if variable not in paths or not path.is_file():
        raise EmulatorError(f"{script} printed no executable {variable}=<path>:\n{proc.stdout}")
    return path


def round_trip(fs: Any, bucket: str) -> None:
    """The readiness probe through a real client: create `bucket`, write, read back and delete an object
    and the bucket (raises until the emulator serves all four)."""
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.pipe_file(f"{bucket}/probe", b"ready")
    if fs.cat_file(f"{bucket}/probe") != b"ready":
        raise EmulatorError("the readiness probe read back something else")
    fs.rm(bucket, recursive=True)
