"""The artifact directory's files, as a contract: ``manifest.json``, ``report.json`` and
``profiles/<hardware-profile>.json``.

One writer per file (compression writes the manifest and the report, the profiling Job a profile),
one typed reader (:func:`read_manifest`, :func:`read_report`, :func:`read_profile`), and these models
in between, shared by compression, serving and the operator. Only pydantic and the standard library
are imported here, so the serving image (no torch) and the operator read exactly what compression
wrote.

Every model forbids unknown fields and takes JSON scalars as they are (a number in quotes is not a
number), so a hand-edited file or one from another version is refused, with the file and the field:
``/store/gen-1/manifest.json: variants[0].latency.batchSpread: field required``.

Versions: each file carries ``schemaVersion`` (its own number: a change to profiles does not
invalidate manifests). A reader accepts exactly the version it was built with, and says whether the
file is older (write it again with this release) or newer (upgrade the reader). Because unknown
fields are refused, any change of fields (added, removed, renamed, or a change of meaning) takes a
new number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

MANIFEST = "manifest.json"
REPORT = "report.json"
PROFILES = "profiles"

# The version each reader reads (and each writer writes); the models' ``schemaVersion`` Literal follows.
MANIFEST_VERSION: Final = 2
REPORT_VERSION: Final = 1
PROFILE_VERSION: Final = 2

Float = Annotated[float, Strict()]  # a JSON number (an integer is a number); never a string or a bool
SHA256 = r"^[0-9a-f]{64}$"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ArtifactError(ValueError):
    """An artifact file is missing, unreadable or not what this schema says (the message names the
    file and, where one is wrong, the field), or a name asked for is not in it."""


class MissingArtifactFile(ArtifactError):
    """The file is not there (readers of optional files, e.g. a profile not measured yet, skip it)."""


class _File(BaseModel):
    """Part of a file our own writers write: camelCase keys, nothing unknown, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------ shared parts


class TensorSpec(_File):
    """One input or output of a variant; ``-1`` marks a dynamic dimension."""

    name: StrictStr
    datatype: StrictStr  # an Open Inference Protocol datatype, e.g. FP32, INT64, BYTES
    shape: tuple[StrictInt, ...]


class Score(_File):
    """A variant's metric on the held-out data, against the FP32 model's (``drop`` = baseline - value)."""

    name: StrictStr
    value: Float
    baseline: Float
    drop: Float


class Latency(_File):
    """Median times measured by compression: one row, and one serving-size batch."""

    batch1_ms: Float = Field(ge=0)
    batch_ms: Float = Field(ge=0)
    batch_size: StrictInt = Field(ge=1)
    throughput_per_s: Float = Field(ge=0)
    batch_spread: Float = Field(ge=0)
    threads: StrictInt = Field(ge=0)


# ------------------------------------------------------------------------------------ manifest.json


class FileEntry(_File):
    sha256: StrictStr = Field(pattern=SHA256)
    size_bytes: StrictInt = Field(ge=0)


class StageFile(_File):
    """One stage of a variant cut into contiguous pieces: its own ONNX file (listed under ``files``),
    what it reads (stage 0: the model's inputs) and what it sends the next stage (the last: the model's
    outputs)."""

    index: StrictInt = Field(ge=0)
    file: StrictStr = Field(min_length=1)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class StageSet(_File):
    """A variant cut into ``count`` stages, verified by compression: the chain answers like the whole
    model on held-out rows at batch 1 and at the serving batch."""

    count: StrictInt = Field(ge=2)
    stages: tuple[StageFile, ...]

    @model_validator(mode="after")
    def _one_file_per_stage(self) -> StageSet:
        if [s.index for s in self.stages] != list(range(self.count)):
            raise ValueError(f"stages: expected stages 0..{self.count - 1} in order")
        return self


class Variant(_File):
    """A kept variant: its ONNX file (listed under ``files``) and signature, size, metric, latency, and
    the stage files of every shard count compression cut it into (``stageSets``, none for 1 shard)."""

    name: StrictStr = Field(min_length=1)
    file: StrictStr = Field(min_length=1)
    steps: tuple[StrictStr, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: StrictInt = Field(ge=0)
    metric: Score | None
    latency: Latency | None
    stage_sets: tuple[StageSet, ...] = ()

    def stage_set(self, count: int) -> StageSet:
        for stage_set in self.stage_sets:
            if stage_set.count == count:
                return stage_set
        made = ", ".join(str(s.count) for s in self.stage_sets) or "none"
        raise ArtifactError(
            f"variant {self.name!r} has no {count}-shard stage files (shard counts cut: {made}); "
            "compression cuts the counts spec.serving.shards allows"
        )


class Manifest(_File):
    """``manifest.json``: every file of the artifact (sha256, size) and every kept variant, best first."""

    schema_version: Literal[2] = MANIFEST_VERSION
    model: StrictStr
    generation: StrictInt = Field(ge=0)
    source: StrictStr
    created_at: StrictStr = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    files: dict[str, FileEntry]
    variants: tuple[Variant, ...]  # at least one

    @model_validator(mode="after")
    def _variants_are_listed(self) -> Manifest:
        if not self.variants:
            raise ValueError("variants: at least one variant is needed (compression always keeps fp32)")
        seen: set[str] = set()
        for index, variant in enumerate(self.variants):
            if variant.name in seen:
                raise ValueError(f"variants[{index}].name: {variant.name!r} appears twice")
            seen.add(variant.name)
            if variant.file not in self.files:
                raise ValueError(f"variants[{index}].file: {variant.file!r} is not listed under files")
            for set_index, stage_set in enumerate(variant.stage_sets):
                for stage in stage_set.stages:
                    if stage.file not in self.files:
                        raise ValueError(
                            f"variants[{index}].stageSets[{set_index}].stages[{stage.index}].file: "
                            f"{stage.file!r} is not listed under files"
                        )
        return self

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(v.name for v in self.variants) or "none"
        raise ArtifactError(f"variant {name!r} is not in the manifest (variants: {known})")


# ------------------------------------------------------------------------------------ report.json


class Budget(_File):
    """The accuracy budget compression applied (``spec.compression.accuracyBudget``)."""

    metric: StrictStr | None
    max_drop: Float = Field(ge=0)
    min_value: Float | None


class ReportRow(_File):
    """Every variant compression considered, kept or dropped (with the reason)."""

    name: StrictStr
    steps: tuple[StrictStr, ...]
    status: Literal["kept", "dropped"]
    reason: StrictStr | None
    size_bytes: StrictInt = Field(ge=0)
    metric: Score | None
    latency: Latency | None
    chosen: StrictBool
    chosen_as: tuple[StrictStr, ...]
    # Written only when known (FP32 has a size; both have a latency); absent otherwise.
    size_ratio: Float | None = None
    speedup_batch: Float | None = None
    speedup_batch1: Float | None = None

    @model_serializer(mode="wrap")
    def _without_unknown_ratios(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in (
            "size_ratio",
            "speedup_batch",
            "speedup_batch1",
            "sizeRatio",
            "speedupBatch",
            "speedupBatch1",
        ):
            if key in data and data[key] is None:
                del data[key]
        return data


class Report(_File):
    """``report.json``: the compression run, every variant considered, the ranking and the choices."""

    schema_version: Literal[1] = REPORT_VERSION
    model: StrictStr
    source: StrictStr
    metric: StrictStr
    budget: Budget
    serving_batch_size: StrictInt = Field(ge=1)
    ranking: tuple[StrictStr, ...]
    chosen: dict[str, StrictStr]
    variants: tuple[ReportRow, ...]

    def row(self, name: str) -> ReportRow | None:
        return next((r for r in self.variants if r.name == name), None)


# ------------------------------------------------------------------------------------ profiles/<p>.json


class ProfileRow(_File):
    """One variant in one shard count measured on the profile's hardware at the serving batch size:
    by timing the ONNX Runtime session alone (``session``), or through a chain of real servers, one
    per stage (``servers``), which also gives the largest stage server's peak resident memory."""

    name: StrictStr
    shards: StrictInt = Field(ge=1)
    batch_size: StrictInt = Field(ge=1)
    latency_p95_ms: Float = Field(ge=0)
    throughput_rps: Float = Field(ge=0)
    method: Literal["session", "servers"] = "session"
    memory_bytes: StrictInt | None = Field(default=None, ge=0)


class Profile(_File):
    """``profiles/<hardwareProfile>.json``: what the profiling Job measured on that HardwareProfile."""

    schema_version: Literal[2] = PROFILE_VERSION
    hardware_profile: StrictStr = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    provider: StrictStr
    variants: tuple[ProfileRow, ...]


# ------------------------------------------------------------------------------------ files


class Folder(Protocol):
    """Where an artifact directory's files are read and written: a ``pathlib.Path`` here, or a prefix in
    an object store (``frugal.storage``'s ``UPath``, pathlib's API over fsspec)."""

    def __truediv__(self, name: str) -> Folder: ...

    def read_bytes(self) -> bytes: ...

    def write_bytes(self, data: bytes) -> int: ...


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), size_bytes=path.stat().st_size)


def profile_path(directory: Folder, hardware_profile: str) -> Folder:
    return directory / PROFILES / f"{hardware_profile}.json"


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST
    _write(path, manifest)
    return path


def write_report(directory: Path, report: Report) -> Path:
    path = directory / REPORT
    _write(path, report)
    return path


def write_profile(directory: Folder, profile: Profile) -> Folder:
    return _write(profile_path(directory, profile.hardware_profile), profile)


def document(model: BaseModel) -> dict[str, Any]:
    """The JSON document a model is written as (camelCase keys, in field order)."""
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return data


def read_manifest(directory: Folder) -> Manifest:
    return parse_manifest(_read(directory / MANIFEST), str(directory / MANIFEST))


def read_report(directory: Folder) -> Report:
    return parse_report(_read(directory / REPORT), str(directory / REPORT))


def read_profile(directory: Folder, hardware_profile: str) -> Profile:
    path = profile_path(directory, hardware_profile)
    profile = parse_profile(_read(path), str(path))
    if profile.hardware_profile != hardware_profile:
        raise ArtifactError(
            f"{path}: hardwareProfile: {profile.hardware_profile!r} measured, but the file is "
            f"{hardware_profile!r}'s"
        )
    return profile


def parse_manifest(text: str | bytes, where: str = MANIFEST) -> Manifest:
    return _parse(Manifest, text, where, MANIFEST_VERSION, "compress the model again with this release")


def parse_report(text: str | bytes, where: str = REPORT) -> Report:
    return _parse(Report, text, where, REPORT_VERSION, "compress the model again with this release")


def parse_profile(text: str | bytes, where: str = PROFILES) -> Profile:
    return _parse(Profile, text, where, PROFILE_VERSION, "run the profiling again with this release")


# ------------------------------------------------------------------------------------ internals

_M = TypeVar("_M", bound=_File)


def _read(path: Folder) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingArtifactFile(f"{path} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {type(exc).__name__}: {exc.strerror or exc}") from None


def _parse(model: type[_M], text: str | bytes, where: str, version: int, remedy: str) -> _M:
    try:
        doc = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise ArtifactError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: must hold a JSON object, not {type(doc).__name__}")
    _check_version(doc, where, version, remedy)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise ArtifactError(f"{where}: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _check_version(doc: Mapping[str, Any], where: str, version: int, remedy: str) -> None:
    if "schemaVersion" not in doc:
        raise ArtifactError(
            f"{where}: schemaVersion: field required (this reader reads version {version}; "
            f"the file predates versioning or was not written by frugal: {remedy})"
        )
    found = doc["schemaVersion"]
    if type(found) is not int:
        raise ArtifactError(f"{where}: schemaVersion: must be an integer, not {found!r}")
    if found < version:
        raise ArtifactError(
            f"{where}: schemaVersion: the file is version {found}, written by an older frugal; this "
            f"reader reads version {version} only: {remedy}"
        )
    if found > version:
        raise ArtifactError(
            f"{where}: schemaVersion: the file is version {found}, written by a newer frugal; this "
            f"reader reads version {version} only: upgrade this component"
        )


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error as ``field.path: what is wrong``."""
    where = _field_path(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"{where}: field required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "value_error" and not error["loc"]:
        return str(error.get("ctx", {}).get("error", error["msg"]))  # our own checks name the field
    message = str(error["msg"])
    message = message[:1].lower() + message[1:]
    shown = json.dumps(error.get("input"), default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{where}: {message} (found {shown})"


def _field_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "(the document)"


def _write(path: Folder, model: BaseModel) -> Folder:
    """Write whole: a local file through a temporary name and a rename; an object store's path (any
    other type, such as frugal.storage's) by one PUT, which is atomic there."""
    data = (json.dumps(document(model), indent=2) + "\n").encode()
    if not isinstance(path, Path):
        path.write_bytes(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
