"""One emulator process on loopback for the test tiers, the lifecycle the storage harnesses share
(``tests/s3_harness.py``, ``tests/gcs_harness.py``, ``tests/azure_harness.py``): start it on a free port
with its log in its work directory, wait until a real round trip through the client succeeds (a
listening port is not enough), report the log when it exits or never gets ready, stop it (SIGTERM, then
SIGKILL)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Self

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not be installed or started."""


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
class EmulatorProcess:
    """Subclasses say how to run (:meth:`argv`, :meth:`environment`) and probe (:meth:`probe`) it; use as
    a context manager or call :meth:`start` / :meth:`stop`."""

    binary: Path
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    startup_seconds: float = 0.0
    _process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    name: ClassVar[str] = "emulator"
    error: ClassVar[type[EmulatorError]] = EmulatorError  # what start() raises
    ready_timeout_s: ClassVar[float] = READY_TIMEOUT_S
    stop_grace_s: ClassVar[float] = STOP_GRACE_S

    def argv(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None  # this process's own

    def allocate_ports(self) -> None:
        """Choose the free port(s) it will listen on: ``port`` is the one clients use."""
        (self.port,) = free_ports(1)

    def prepare(self) -> None:
        """Anything to write into the work directory before the process starts (ports are chosen)."""

    def probe(self) -> None:
        """One round trip through the client: raises until the emulator serves requests."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """What the not-ready error calls it."""
        return f"{self.name} on {self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_excerpt(self, head: int = 0, tail: int = 60) -> str:
        """The log's last `tail` lines, after its first `head` ones when it is longer than both."""
        if self._log_file is not None:
            self._log_file.flush()
        if not self.log_path.exists():
            return "(no log written)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        if len(lines) <= head + tail:
            return "\n".join(lines)
        skipped = [f"[... {len(lines) - head - tail} lines ...]"] if head else []
        return "\n".join([*lines[:head], *skipped, *lines[-tail:]])

    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.allocate_ports()
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
            self._wait_until_ready(time.monotonic() + self.ready_timeout_s)
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
        raise self.error(
            f"{self.description} was not ready within {self.ready_timeout_s:.0f} s "
            f"(last: {last_error}); log {self.log_path}:\n{self.log_excerpt()}"
        )

    def _port_open(self) -> bool:
        """Whether something listens on the port (a subclass may ask more of it)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            return sock.connect_ex((self.host, self.port)) == 0

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise self.error(
                f"{self.name} exited with {code} while starting; log {self.log_path}:\n{self.log_excerpt()}"
            )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
