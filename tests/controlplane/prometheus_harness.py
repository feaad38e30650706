"""A real Prometheus server on loopback for tests, scraping targets the test names at run time.

The binaries come from ``scripts/prometheus-binary.sh`` (Debian's ``prometheus`` package, pinned, cached
outside the repository; it writes their paths to ``<cache>/bin/prometheus.env``). The server listens on
127.0.0.1 on a free port, keeps its TSDB in a temporary directory and scrapes one job,
``frugal-serving``, whose targets come from a ``file_sd`` file that :meth:`Prometheus.set_targets`
rewrites (Prometheus watches it, and re-reads it every second), and from any further ``file_sd`` files
named at construction (``target_files``: what ``frugal up --prometheus-targets`` writes). ``honor_labels`` keeps the
``namespace``/``model``/``shard`` labels the servers export as written. A change of targets takes
effect within about 5-10 s, not at once: Prometheus 2.42's discovery and scrape managers each pass
updates on along a fixed 5 s tick (not configurable), so wait with :data:`TARGET_UPDATE_TIMEOUT_S`
(:meth:`Prometheus.wait_for_series`, :meth:`Prometheus.wait_for_no_series`). If the server cannot start,
:class:`PrometheusError` is raised with the tail of its log: a tier that cannot start its real parts
fails, it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from controlplane_harness import REPO_ROOT, ServerProcess, free_port, start_server

BINARY_SCRIPT = REPO_ROOT / "scripts" / "prometheus-binary.sh"
JOB_NAME = "frugal-serving"
READY_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
# How long a set_targets() change may take to show in queries: two 5 s ticks, a scrape, and slack.
TARGET_UPDATE_TIMEOUT_S = 20.0

Series = dict[str, Any]  # one element of /api/v1/query's data.result: {"metric": {...}, "value": [t, "v"]}


class PrometheusError(RuntimeError):
    """Prometheus could not be prepared or started, or answered a query with an error."""


class PrometheusUnavailable(PrometheusError, ConnectionError):
    """Nothing answered at Prometheus' address (not started, stopped, or crashed)."""


def env_file() -> Path:
    cache = Path(os.environ.get("FRUGAL_CACHE_DIR") or Path.home() / ".cache" / "frugal")
    return cache / "bin" / "prometheus.env"


def _binary(key: str) -> Path:
    path = env_file()
    hint = f"run {BINARY_SCRIPT.relative_to(REPO_ROOT)} (scripts/test.sh does) to fetch Prometheus"
    if not path.is_file():
        raise PrometheusError(f"{path} does not exist: {hint}")
    paths = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    if key not in paths:
        raise PrometheusError(f"{path} has no {key}= line: {hint}")
    binary = Path(paths[key])
    if not os.access(binary, os.X_OK):
        raise PrometheusError(f"{binary} (from {path}) is not an executable file: {hint}")
    return binary


def ensure_prometheus() -> Path:
    """The Prometheus server binary recorded by ``scripts/prometheus-binary.sh``."""
    return _binary("PROMETHEUS")


def ensure_promtool() -> Path:
    """The promtool binary recorded by ``scripts/prometheus-binary.sh``."""
    return _binary("PROMTOOL")


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 1 -> "1s", 0.5 -> "500ms"."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a Prometheus interval must be positive, got {seconds!r} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


class Prometheus:
    """One Prometheus server; ``start()``, ``set_targets(...)``, ``query(...)``, ``stop()``.

    ``workdir`` holds the config, the targets file, the TSDB and the log; when not given, a temporary
    directory is made and removed by :meth:`stop`. Also a context manager (start on enter, stop on exit).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        interval_s: float = 1.0,
        binary: Path | None = None,
        promtool: Path | None = None,
        extra_args: Iterable[str] = (),
        target_files: Iterable[str] = (),
        listen_host: str = "127.0.0.1",
        scrape_configs: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """`listen_host`: where it listens (a pod network's gateway, for pods to query it);
        `scrape_configs`: more jobs beside ``frugal-serving`` (e.g. Kubernetes pod discovery)."""
        self.listen_host = listen_host
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.interval_s = interval_s
        self.target_files = list(target_files)  # more file_sd files (globs allowed) that others write
        self.interval = _duration(interval_s)
        self.binary = binary or ensure_prometheus()
        self.promtool = promtool or ensure_promtool()
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="frugal-prometheus-")) if workdir is None else workdir
        self.port = 0
        self.server: ServerProcess | None = None
        self.startup_seconds = 0.0
        self._final_log = ""

    # -- paths -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def targets_path(self) -> Path:
        return self.workdir / "targets.json"

    def config(self) -> dict[str, Any]:
        """The generated configuration, as a document."""
        return {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB_NAME,
                    "honor_labels": True,
                    "file_sd_configs": [
                        {"files": [str(self.targets_path), *self.target_files], "refresh_interval": "1s"}
                    ],
                },
                *self.scrape_configs,
            ],
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        try:
            self._check_config()
            self.port = self.port or free_port()  # a restart keeps its URL
            argv: list[str | Path] = [
                self.binary,
                f"--config.file={self.config_path}",
                f"--web.listen-address={self.listen_host}:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
                *self.extra_args,
            ]
            self.server = start_server("prometheus", argv, self.workdir)
            self._wait_ready(READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _check_config(self) -> None:
        """Write the configuration (and an empty targets file) and validate it with ``promtool``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.targets_path.exists():
            self.set_targets([])
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        check = [str(self.promtool), "check", "config", str(self.config_path)]
        proc = subprocess.run(check, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise PrometheusError(f"{' '.join(check)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()
            self._final_log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if self.server is not None:
            return self.server.log_tail(lines)
        if self._final_log:
            return "\n".join(self._final_log.splitlines()[-lines:])
        return "(prometheus was not started)"

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.server is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self.server.proc.returncode} while starting:\n{self.log_tail(80)}"
                )
            try:
                if self._get("/-/ready", timeout=1.0)[0] == 200:
                    return
            except PrometheusUnavailable:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout_s:.0f} s:\n{self.log_tail(80)}")

    # -- targets -----------------------------------------------------------------------------------
    def set_targets(self, targets: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Replace the scrape targets: ``[("127.0.0.1:PORT", {"pod": "x", ...}), ...]``; the labels are
        target labels (the scraped series' own labels win where both have one: honor_labels)."""
        groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_path.with_name(f".{self.targets_path.name}.tmp")
        tmp.write_text(json.dumps(groups, indent=1))
        os.replace(tmp, self.targets_path)

    def active_targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets``' active targets (scrapeUrl, health, lastError, labels...)."""
        data = self._api("/api/v1/targets", {"state": "active"})
        return list(data.get("activeTargets", []))

    # -- queries -----------------------------------------------------------------------------------
    def query(self, promql: str, at: float | None = None) -> list[Series]:
        """An instant query through ``/api/v1/query``: ``data.result`` (a scalar or string answer comes
        back as one series with no labels). :class:`PrometheusUnavailable` (a ``ConnectionError``) when
        nothing listens; :class:`PrometheusError` when Prometheus rejects the query."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("/api/v1/query", params)
        result = data.get("result", [])
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        """A range query through ``/api/v1/query_range``: ``data.result``, each series with ``values``
        ``[[t, "v"], ...]``."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        return list(self._api("/api/v1/query_range", params).get("result", []))

    def wait_for_series(
        self,
        promql: str,
        timeout_s: float = TARGET_UPDATE_TIMEOUT_S,
        predicate: Callable[[list[Series]], bool] | None = None,
    ) -> list[Series]:
        """Poll ``promql`` until it returns at least one series (and ``predicate(result)`` holds, when
        given); :class:`PrometheusError` with the last answer, the targets and the log tail on timeout."""
        deadline = time.monotonic() + timeout_s
        result: list[Series] = []
        while True:
            result = self.query(promql)
            if result and (predicate is None or predicate(result)):
                return result
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.25, self.interval_s / 2))
        targets = [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError", "labels")}
            for t in self.active_targets()
        ]
        raise PrometheusError(
            f"no matching series for {promql!r} after {timeout_s:.0f} s; last answer: {result}\n"
            f"active targets: {json.dumps(targets)}\n--- prometheus log ---\n{self.log_tail(40)}"
        )

    def wait_for_no_series(self, promql: str, timeout_s: float = TARGET_UPDATE_TIMEOUT_S) -> None:
        """Poll ``promql`` until it returns nothing (e.g. a removed target's series went stale);
        :class:`PrometheusError` with the last answer and the log tail on timeout."""
        deadline = time.monotonic() + timeout_s
        while result := self.query(promql):
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"{promql!r} still answers after {timeout_s:.0f} s: {result}\n"
                    f"--- prometheus log ---\n{self.log_tail(40)}"
                )
            time.sleep(min(0.25, self.interval_s / 2))

    # -- HTTP --------------------------------------------------------------------------------------
    def _get(
        self, path: str, params: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S
    ) -> tuple[int, bytes]:
        if not self.port:
            raise PrometheusUnavailable("prometheus was never started (no port)")
        url = self.url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())
        except OSError as error:  # URLError, ConnectionError, TimeoutError
            reason = getattr(error, "reason", error)
            raise PrometheusUnavailable(f"prometheus at {self.url} unreachable: {reason}") from error

    def _api(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        status, body = self._get(path, params)
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"GET {path} answered {status} with non-JSON: {body[:500]!r}") from None
        if status != 200 or answer.get("status") != "success":
            raise PrometheusError(
                f"GET {path} {dict(params)} answered {status}: {answer.get('errorType')}: {answer.get('error')}"
            )
        return dict(answer.get("data") or {})
