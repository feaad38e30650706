"""Read a generation's artifacts (manifest, report, profiling results) into planner inputs.

Pure parsing functions take the decoded JSON; :func:`read` does the file I/O. Profiling Jobs write
``profiles/<hardware-profile>.json`` (see ``frugal.serving.profiling``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal.operator.decision.planner import Measurement, Variant

MANIFEST = "manifest.json"
REPORT = "report.json"
PROFILES = "profiles"


class ArtifactError(ValueError):
    """The artifacts are missing or malformed (message says which file and what is wrong)."""


@dataclass(frozen=True)
class Artifacts:
    manifest: Mapping[str, Any]
    report: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]


def read(directory: Path, profile_names: Sequence[str]) -> Artifacts:
    """Load manifest.json (required), report.json and each profile's results (optional)."""
    manifest = _load(directory / MANIFEST, required=True)
    report = _load(directory / REPORT, required=False)
    profiles = {}
    for name in profile_names:
        data = _load(directory / PROFILES / f"{name}.json", required=False)
        if data:
            profiles[name] = data
    return Artifacts(manifest, report, profiles)


def throughput(artifacts: Artifacts, variant: str) -> dict[str, float]:
    """One replica's profiled requests/s of `variant`, per profile that measured it."""
    return {
        profile: float(row["throughputRps"])
        for profile, data in artifacts.profiles.items()
        for row in data.get("variants", [])
        if row.get("name") == variant and row.get("throughputRps")
    }


def planner_variants(artifacts: Artifacts) -> list[Variant]:
    """One planner Variant per manifest variant, with report numbers and profiling measurements."""
    variants = artifacts.manifest.get("variants")
    if not isinstance(variants, list) or not variants:
        raise ArtifactError(f"{MANIFEST}: 'variants' must be a non-empty list")
    report_rows = {str(r.get("name")): r for r in artifacts.report.get("variants", []) if isinstance(r, dict)}
    measured = _measurements(artifacts.profiles)
    result = []
    for entry in variants:
        name = str(entry.get("name", ""))
        metric = entry.get("metric") or {}
        report_latency, report_throughput = _report_numbers(report_rows.get(name, {}))
        result.append(
            Variant(
                name=name,
                size_bytes=int(entry.get("sizeBytes", 0)),
                accuracy_drop=max(0.0, float(metric.get("drop", 0.0))),
                metric=str(metric.get("name", "accuracy")),
                metric_value=None if metric.get("value") is None else float(metric["value"]),
                measurements=tuple(measured.get(name, ())),
                report_latency_p95_ms=report_latency,
                report_throughput_rps=report_throughput,
            )
        )
    return result


def variant_steps(artifacts: Artifacts) -> dict[str, list[str]]:
    return {
        str(v.get("name")): [str(s) for s in v.get("steps", [])]
        for v in artifacts.manifest.get("variants", [])
    }


def _measurements(profiles: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Measurement]]:
    result: dict[str, list[Measurement]] = {}
    for profile, data in profiles.items():
        for row in data.get("variants", []):
            if row.get("latencyP95Ms") is None or row.get("throughputRps") is None:
                continue
            result.setdefault(str(row["name"]), []).append(
                Measurement(
                    profile=profile,
                    latency_p95_ms=float(row["latencyP95Ms"]),
                    throughput_rps=float(row["throughputRps"]),
                    shards=int(row.get("shards", 1)),
                )
            )
    return result


def _report_numbers(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The compression report's latency/throughput at the serving batch size, if it has them.

    The report gives the median time of one serving-size batch (``latency.batchMs``) and rows per
    second (``latency.throughputPerS``); the median stands in for the p95 (it is all there is).
    """
    latency = row.get("latency") or {}
    batch_ms = latency.get("batchMs", row.get("latencyP95Ms"))
    throughput = latency.get("throughputPerS", row.get("throughputRps"))
    if throughput is None and batch_ms and latency.get("batchSize"):
        throughput = float(latency["batchSize"]) * 1000.0 / float(batch_ms)
    return (None if batch_ms is None else float(batch_ms), None if throughput is None else float(throughput))


def _load(path: Path, required: bool) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ArtifactError(
                f"{path} is missing: the compression Job did not write its manifest"
            ) from None
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is unreadable: {error}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return data
