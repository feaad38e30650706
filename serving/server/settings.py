"""The server's configuration: each setting declared once, here, as a field of `ServeConfig`.

A field annotated `Annotated[T, Setting(help)]` is a setting: its name gives the flag (`max_batch_size`
↔ `--max-batch-size`) and the environment variable (FRUGAL_MAX_BATCH_SIZE), its type the parser
(`int`, `float`, `str`, `Path`; optional types parse as their base type; `Setting.parse` overrides),
its default the default; a field without a default is required. `frugal serve`'s parser is derived
from these fields (`add_arguments`), and so is the front's (`frugal.serving.front.FrontConfig`). A
field without `Setting` (`power_interval_s`) is no flag: only code sets it.

A setting the process cannot start with (a port already in use, an artifact directory without a
manifest, a variant the manifest does not list) is a `StartupError`: the command prints it as one line
naming the problem and the flag to change, and exits 2, the exit code of every `frugal` command for
input it cannot use.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import socket
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from frugal.storage.object_store import Location, location

ENV_PREFIX = "FRUGAL_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Setting:
    """What makes a config field a flag and an environment variable: its help, and how text becomes it."""

    help: str
    parse: Callable[[str], Any] | None = None  # None: the field's type


@dataclass(frozen=True)
class Declared:
    """One setting as a command sees it, derived from its field."""

    name: str  # the field, and argparse's dest
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any  # None for a required setting
    required: bool
    help: str


def flag(name: str) -> str:
    """A field's flag: `max_body_bytes` → `--max-body-bytes`."""
    return "--" + name.replace("_", "-")


def env_name(name: str, prefix: str = ENV_PREFIX) -> str:
    """A field's (or a flag's) variable: `max_body_bytes` or `--max-body-bytes` → FRUGAL_MAX_BODY_BYTES."""
    return prefix + name.lstrip("-").replace("-", "_").upper()


def declared(config: type, env_prefix: str = ENV_PREFIX) -> list[Declared]:
    """The settings among a dataclass's fields, in declaration order."""
    hints = typing.get_type_hints(config, include_extras=True)
    found = []
    for item in dataclasses.fields(config):
        hint = hints[item.name]
        setting = next(
            (m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Setting)),
            None,
        )
        if setting is None:
            continue
        required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        if item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None if required else item.default
        found.append(
            Declared(
                name=item.name,
                flag=flag(item.name),
                env=env_name(item.name, env_prefix),
                parse=setting.parse or _parser_of(typing.get_args(hint)[0], item.name),
                default=default,
                required=required,
                help=setting.help,
            )
        )
    return found


def _parser_of(kind: Any, name: str) -> Callable[[str], Any]:
    if isinstance(kind, types.UnionType):  # `int | None` parses as int
        kinds = [k for k in typing.get_args(kind) if k is not type(None)]
        if len(kinds) == 1:
            kind = kinds[0]
    if kind in (int, float, str, Path):
        return typing.cast(Callable[[str], Any], kind)
    raise TypeError(f"setting {name!r} of type {kind!r} needs Setting(parse=...)")


def add_arguments(
    parser: argparse.ArgumentParser,
    settings: list[Declared],
    environ: Mapping[str, str],
    *,
    blank_is_unset: bool = False,
) -> None:
    """One flag per setting; a setting's environment variable, when set, replaces its default (a flag
    still wins). A value that does not parse stops the parser naming the variable. With
    `blank_is_unset`, a variable set to "" counts as not set."""
    for setting in settings:
        default = setting.default
        value = environ.get(setting.env)
        if value is not None and not (blank_is_unset and value == ""):
            try:
                default = setting.parse(value)
            except ValueError as exc:
                parser.error(f"{setting.env}={value!r}: {exc}")
        parser.add_argument(
            setting.flag, type=setting.parse, default=default, help=f"{setting.help} [{setting.env}]"
        )


def missing(args: argparse.Namespace, settings: list[Declared]) -> list[Declared]:
    """The required settings neither a flag nor a variable gave."""
    return [s for s in settings if s.required and getattr(args, s.name) is None]


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` → dict; raises ValueError naming the bad item."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key.strip()] = value.strip()
    return labels


class StartupError(ValueError):
    """A setting a process cannot start with. `str(error)` is the line to print after the command's
    name: the problem, then what to change (`port 8080 is in use: pass another --port`)."""

    def __init__(self, problem: str, flag: str, remedy: str | None = None) -> None:
        super().__init__(f"{problem}: {remedy or 'pass another ' + flag}")
        self.flag = flag


def port_in_use(host: str, port: int) -> OSError | None:
    """The EADDRINUSE listening on `host:port` fails with now, or None; a probe for servers whose own
    failure to bind says too little (grpc's C core says only "Failed to bind", and logs it itself)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.create_server(address, family=family):
            return None
    except OSError as exc:
        return exc if exc.errno == errno.EADDRINUSE else None  # any other failure: the server's own says it


def cannot_listen(host: str, port: int, flag: str, error: OSError, remedy: str | None = None) -> StartupError:
    """`error` from listening on `host:port` as the `StartupError` naming `flag`."""
    if error.errno == errno.EADDRINUSE:
        return StartupError(f"port {port} is in use", flag, remedy)
    return StartupError(f"cannot listen on {host}:{port} ({error.strerror or error})", flag, remedy)


def optional_path(text: str) -> Path | None:
    """A path, or None for an empty value (an env var set to "" turns the setting off)."""
    return Path(text) if text.strip() else None


@dataclass(frozen=True)
class ServeConfig:
    artifacts: Annotated[
        Location,
        Setting(
            "artifact directory holding manifest.json, or its s3:// URI (fetched into --fetch-dir) (required)",
            parse=location,
        ),
    ]
    variant: Annotated[str, Setting("variant name from the manifest, e.g. int8-dynamic (required)")]
    model_name: Annotated[str | None, Setting("name in the OIP URLs (default: the manifest's model)")] = None
    host: Annotated[str, Setting("address to listen on (0.0.0.0 in a pod)")] = "127.0.0.1"
    port: Annotated[int, Setting("port to listen on (0: any free port, printed when ready)")] = 8080
    grpc_port: Annotated[int, Setting("OIP gRPC port (0: any free port, printed when ready; -1: off)")] = 8081
    max_batch_size: Annotated[int, Setting("most requests merged into one runtime execution")] = 32
    max_delay_ms: Annotated[float, Setting("longest a request waits for companions under load")] = 2.0
    max_queue_size: Annotated[int, Setting("queued requests beyond which the server answers 429")] = 1024
    request_timeout_ms: Annotated[float, Setting("per-request deadline (504 when passed)")] = 30_000.0
    max_body_bytes: Annotated[
        int,
        Setting(
            "largest request body accepted, 413 beyond (0: derived from the model's inputs: 256 rows or the "
            "batch size, open dimensions at 512, as JSON; at least 1 MiB)"
        ),
    ] = 0
    latency_target_ms: Annotated[
        float | None,
        Setting(
            "the latency SLO: answers slower than this are counted in "
            "frugal_requests_over_latency_target_total"
        ),
    ] = None
    execution_provider: Annotated[
        str,
        Setting(
            "CPUExecutionProvider, CUDAExecutionProvider or TensorrtExecutionProvider (falls back, logged)"
        ),
    ] = "CPUExecutionProvider"
    intra_op_threads: Annotated[
        int | None, Setting("ONNX Runtime threads (default: the cgroup CPU limit)")
    ] = None
    shard_index: Annotated[int, Setting("this server's stage of the model, 0-based")] = 0
    shard_count: Annotated[int, Setting("number of stages the model is cut into")] = 1
    next_stage: Annotated[
        str | None, Setting("base URL of the next stage's server (every shard but the last)")
    ] = None
    idle_watts: Annotated[float | None, Setting("hardware profile idle power, for the power estimate")] = None
    max_watts: Annotated[float | None, Setting("hardware profile max power, for the power estimate")] = None
    labels: Annotated[
        dict[str, str], Setting("metric labels k=v,...: namespace, hardware_profile", parse=parse_labels)
    ] = field(default_factory=dict)
    inline_below_ms: Annotated[
        float, Setting("run batches faster than this on the event loop (0: never)")
    ] = 0.5
    shutdown_grace_s: Annotated[float, Setting("seconds to keep serving, unready, after SIGTERM")] = 0.0
    verify_cache_dir: Annotated[
        Path | None,
        Setting(
            "writable directory remembering files already checked against the manifest, so an unchanged "
            "file is not hashed again on the next start (default: none, hash every start)",
            parse=optional_path,
        ),
    ] = None
    fetch_dir: Annotated[
        Path | None,
        Setting(
            "local directory an s3:// --artifacts is fetched into (default: one per URI under the "
            "temporary directory); files already there that match the manifest are kept",
            parse=optional_path,
        ),
    ] = None
    node_cache: Annotated[
        Path | None,
        Setting(
            "the node's model cache (variants/ read-only, inbox/ writable): a variant found there is "
            "served without fetching or hashing; one verified here is offered to it (default: none)",
            parse=optional_path,
        ),
    ] = None
    log_level: Annotated[str, Setting("DEBUG, INFO, WARNING or ERROR")] = "INFO"
    power_interval_s: float = 1.0  # how often power is sampled; no flag

    def problems(self) -> list[str]:
        """Everything wrong with the combination of settings, each saying what to change."""
        found = []
        if not 0 <= self.shard_index < self.shard_count:
            found.append(f"--shard-index {self.shard_index} must be in [0, --shard-count {self.shard_count})")
        if self.shard_index < self.shard_count - 1 and not self.next_stage:
            found.append(
                f"shard {self.shard_index} of {self.shard_count} needs --next-stage URL (the server of shard "
                f"{self.shard_index + 1})"
            )
        if self.shard_index == self.shard_count - 1 and self.next_stage:
            found.append("--next-stage is only for shards before the last one")
        if (self.idle_watts is None) != (self.max_watts is None):
            found.append("give both --idle-watts and --max-watts, or neither")
        elif self.idle_watts is not None and self.max_watts is not None and self.max_watts < self.idle_watts:
            found.append(f"--max-watts {self.max_watts} must be >= --idle-watts {self.idle_watts}")
        for name in ("max_batch_size", "max_queue_size", "request_timeout_ms"):
            if getattr(self, name) <= 0:
                found.append(f"{flag(name)} must be positive")
        if self.max_body_bytes < 0:
            found.append("--max-body-bytes must be positive (or 0 to derive it from the model's inputs)")
        if self.latency_target_ms is not None and self.latency_target_ms <= 0:
            found.append("--latency-target-ms must be positive")
        if self.max_delay_ms < 0:
            found.append("--max-delay-ms must be >= 0")
        if not 0 < self.port < 65536 and self.port != 0:
            found.append(f"--port {self.port} must be in 1..65535 (or 0 for any free port)")
        if not -1 <= self.grpc_port < 65536:
            found.append(
                f"--grpc-port {self.grpc_port} must be in 1..65535 (or 0 for any free port, -1 for no gRPC)"
            )
        elif self.grpc_port > 0 and self.grpc_port == self.port:
            found.append(f"--grpc-port {self.grpc_port} must differ from --port")
        if self.log_level.upper() not in LOG_LEVELS:
            found.append(f"--log-level {self.log_level} must be one of {', '.join(LOG_LEVELS)}")
        return found


SETTINGS = declared(ServeConfig)  # `frugal serve`'s flags and variables, in --help order
