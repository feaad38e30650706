"""A batch's config (`BatchConfig`): what to score, with which variant, where the results go, and its
prices, as the CLIs read it (``--config FILE``) or the operator's Jobs pass it (``$FRUGAL_BATCH_CONFIG``).
See :mod:`frugal.serving.batch.engine` for what a run does with it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frugal.serving.batch.inputs import BatchError

CONFIG_ENV = "FRUGAL_BATCH_CONFIG"  # the config as JSON text, as the operator's Jobs pass it


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class BatchConfig(_Model):
    """One batch: what to score, with which variant, where the results go, and its prices."""

    input: str  # an .npz, a .parquet or a directory of them (name order = input order), or s3://
    output: str  # a directory, or an s3:// prefix
    artifacts: str  # an artifact directory as `frugal compress` writes it, or the s3:// URI it published to
    fetch_dir: str | None = Field(None, alias="fetchDir")  # where s3:// artifacts are fetched to
    variant: str  # a variant name in its manifest
    batch_size: int = Field(64, alias="batchSize", ge=1)
    rows_per_shard: int = Field(1024, alias="rowsPerShard", ge=1)
    overwrite: bool = False
    execution_provider: str = Field("CPUExecutionProvider", alias="executionProvider")
    intra_op_threads: int | None = Field(None, alias="intraOpThreads", ge=1)
    verify_cache_dir: str | None = Field(None, alias="verifyCacheDir")
    cost_per_hour: float | None = Field(None, alias="costPerHour", ge=0)
    idle_watts: float | None = Field(None, alias="idleWatts", ge=0)
    max_watts: float | None = Field(None, alias="maxWatts", ge=0)
    price_per_kwh: float | None = Field(None, alias="pricePerKWh", ge=0)


def parse_config(text: str | bytes, where: str) -> BatchConfig:
    """A config from JSON text; a BatchError naming every invalid field on one line."""
    try:
        return BatchConfig.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}" for error in exc.errors()
        )
        raise BatchError(f"config {where} is invalid: {problems}") from None


def config_from(path: Path | None, environ: Mapping[str, str], overwrite: bool = False) -> BatchConfig:
    """The CLIs' config: the file given, else the JSON in ``$FRUGAL_BATCH_CONFIG`` (the operator's
    Jobs); `overwrite` (a CLI's ``--overwrite``) turns the config's overwrite on."""
    config = _read_config(path, environ)
    return config.model_copy(update={"overwrite": True}) if overwrite else config


def _read_config(path: Path | None, environ: Mapping[str, str]) -> BatchConfig:
    if path is not None:
        try:
            return parse_config(path.read_bytes(), str(path))
        except OSError as exc:
            raise BatchError(f"cannot read the config {path}: {exc.strerror}") from None
    if environ.get(CONFIG_ENV):
        return parse_config(environ[CONFIG_ENV], f"${CONFIG_ENV}")
    raise BatchError(f"no config: pass --config FILE or set {CONFIG_ENV} to the config's JSON")
