"""The server's configuration, as the CLI (flags or FRUGAL_* environment variables) resolves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    artifacts: Path
    variant: str
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 8081  # 0: any free port; -1: no gRPC service
    max_batch_size: int = 32
    max_delay_ms: float = 2.0
    max_queue_size: int = 1024
    request_timeout_ms: float = 30_000.0
    max_body_bytes: int = 0  # 0: derived from the model's inputs (signature.body_limit)
    latency_target_ms: float | None = None  # counts answers slower than this (the SLO's p95 target)
    execution_provider: str = "CPUExecutionProvider"
    intra_op_threads: int | None = None  # None: the pod's CPU limit
    shard_index: int = 0
    shard_count: int = 1
    next_stage: str | None = None
    idle_watts: float | None = None
    max_watts: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    shutdown_grace_s: float = 0.0
    inline_below_ms: float = 0.5
    power_interval_s: float = 1.0
    verify_cache_dir: Path | None = None  # where verified files' stat tuples are kept (None: hash every start)

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
                found.append(f"--{name.replace('_', '-')} must be positive")
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
        return found
