"""Read a generation's artifacts (manifest, report, profiling results) into planner inputs.

The files are :mod:`frugal.schema.artifact_format`'s, read through its typed readers (a file of
another version, or edited into something the schema does not allow, is an :class:`ArtifactError`
naming the file and the field). Pure functions take the typed files; :func:`read` does the I/O.
Profiling Jobs write ``profiles/<hardware-profile>.json`` (see ``frugal.serving.profiling``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from frugal.operator.decision.planner import Measurement, Variant
from frugal.schema.artifact_format import (
    ArtifactError,
    Folder,
    Manifest,
    MissingArtifactFile,
    Profile,
    Report,
    read_manifest,
    read_profile,
    read_report,
)

__all__ = ["ArtifactError", "Artifacts", "Folder", "planner_variants", "read", "throughput", "variant_steps"]


@dataclass(frozen=True)
class Artifacts:
    manifest: Manifest
    report: Report | None  # None before compression wrote one (it always does)
    profiles: Mapping[str, Profile]  # by hardware profile: those measured so far


def read(directory: Folder, profile_names: Sequence[str]) -> Artifacts:
    """Load manifest.json (required), report.json and each profile's results (optional: not yet
    written is fine, unreadable or invalid is an ArtifactError)."""
    try:
        manifest = read_manifest(directory)
    except MissingArtifactFile as error:
        raise ArtifactError(f"{error}: the compression Job did not write its manifest") from None
    try:
        report: Report | None = read_report(directory)
    except MissingArtifactFile:
        report = None
    profiles = {}
    for name in profile_names:
        try:
            profiles[name] = read_profile(directory, name)
        except MissingArtifactFile:
            continue
    return Artifacts(manifest, report, profiles)


def throughput(artifacts: Artifacts, variant: str) -> dict[str, float]:
    """One replica's profiled requests/s of `variant`, per profile that measured it."""
    return {
        profile: row.throughput_rps
        for profile, data in artifacts.profiles.items()
        for row in data.variants
        if row.name == variant and row.throughput_rps
    }


def planner_variants(artifacts: Artifacts) -> list[Variant]:
    """One planner Variant per manifest variant, with report numbers and profiling measurements."""
    measured = _measurements(artifacts.profiles)
    result = []
    for entry in artifacts.manifest.variants:
        metric = entry.metric
        row = artifacts.report.row(entry.name) if artifacts.report is not None else None
        latency = row.latency if row is not None else None
        result.append(
            Variant(
                name=entry.name,
                size_bytes=entry.size_bytes,
                accuracy_drop=max(0.0, metric.drop) if metric else 0.0,
                metric=metric.name if metric else "accuracy",
                metric_value=metric.value if metric else None,
                measurements=tuple(measured.get(entry.name, ())),
                # The report's median time of one serving-size batch stands in for the p95 (it is
                # all there is), and its rows per second for the throughput.
                report_latency_p95_ms=latency.batch_ms if latency else None,
                report_throughput_rps=latency.throughput_per_s if latency else None,
                stage_bytes=tuple(
                    (
                        stage_set.count,
                        max(artifacts.manifest.files[s.file].size_bytes for s in stage_set.stages),
                    )
                    for stage_set in entry.stage_sets
                ),
            )
        )
    return result


def variant_steps(artifacts: Artifacts) -> dict[str, list[str]]:
    return {v.name: list(v.steps) for v in artifacts.manifest.variants}


def _measurements(profiles: Mapping[str, Profile]) -> dict[str, list[Measurement]]:
    result: dict[str, list[Measurement]] = {}
    for profile, data in profiles.items():
        for row in data.variants:
            result.setdefault(row.name, []).append(
                Measurement(
                    profile=profile,
                    latency_p95_ms=row.latency_p95_ms,
                    throughput_rps=row.throughput_rps,
                    shards=row.shards,
                    memory_bytes=row.memory_bytes,
                    method=row.method,
                )
            )
    return result
