"""Traces: ``t_seconds,rps`` CSV files, read for the simulation, and the shipped ones generated."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TRACES = Path(__file__).resolve().parents[1] / "traces"  # benchmarks/traces


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    t = np.array([float(r["t_seconds"]) for r in rows])
    rps = np.array([float(r["rps"]) for r in rows])
    if len(t) < 2 or np.any(np.diff(t) <= 0) or np.any(rps < 0):
        raise ValueError(f"{path}: need increasing t_seconds and rps >= 0")
    return t, rps


def write_traces() -> None:
    """The shipped traces, in multiples of one replica's SLO capacity (seeded: reproducible)."""
    rng = np.random.default_rng(20240601)
    TRACES.mkdir(parents=True, exist_ok=True)
    # diurnal: a day at 1-minute resolution. Night floor 0.5 at 04:00, day peak ~5.5 at 16:00, a
    # lunchtime shoulder, 3% multiplicative noise, three bursts that rise over 2 minutes.
    t = np.arange(0, 86400 + 1, 60.0)
    hours = t / 3600.0
    day = 0.5 - 0.5 * np.cos(2 * np.pi * (hours - 4.0) / 24.0)
    load = 0.5 + 5.0 * day**1.5 + 0.4 * np.exp(-(((hours - 12.5) / 1.0) ** 2))
    load *= np.exp(rng.normal(0.0, 0.03, len(t)))
    for start_h, minutes, height in ((10.5, 10, 3.0), (14.0, 5, 2.5), (20.0, 15, 2.0)):
        ramp = np.clip((hours - start_h) * 30.0, 0, 1) * np.clip(
            (start_h + minutes / 60 - hours) * 30.0, 0, 1
        )
        load += height * ramp
    _write(TRACES / "diurnal.csv", t, load)
    # spiky: four hours at 10-second resolution. Base 0.5 with 5% noise; six spikes that jump within
    # one sample to 3-6 replicas' worth, hold 1-8 minutes and fall back within 10-30 s.
    t = np.arange(0, 4 * 3600 + 1, 10.0)
    load = 0.5 * np.exp(rng.normal(0.0, 0.05, len(t)))
    for start_min, hold_min, height, fall_s in (
        (20, 3, 4.0, 10),
        (55, 8, 3.0, 30),
        (95, 1, 6.0, 10),
        (130, 5, 5.0, 20),
        (170, 2, 3.5, 10),
        (205, 6, 4.5, 30),
    ):
        start, end = start_min * 60.0, (start_min + hold_min) * 60.0
        shape = np.clip((t - start) / 10.0 + 1, 0, 1) * np.clip((end + fall_s - t) / fall_s, 0, 1)
        load += (height - 0.5) * shape
    _write(TRACES / "spiky.csv", t, load)
    # office: a working day at 1-minute resolution. Nothing from 19:00 to 08:00 but a 10-minute
    # batch at 02:00; 08:00-19:00 a plateau of 2-3 with a lunchtime dip, 5% noise.
    t = np.arange(0, 86400 + 1, 60.0)
    hours = t / 3600.0
    day = np.clip((hours - 8.0) * 2.0, 0, 1) * np.clip((19.0 - hours) * 2.0, 0, 1)
    load = day * (
        2.5 + 0.5 * np.sin(2 * np.pi * (hours - 8.0) / 11.0) - 0.8 * np.exp(-(((hours - 12.5) / 0.5) ** 2))
    )
    load *= np.exp(rng.normal(0.0, 0.05, len(t)))
    load += 0.2 * ((hours >= 2.0) & (hours < 2.0 + 10 / 60))
    _write(TRACES / "office.csv", t, load)


def _write(path: Path, t: np.ndarray, rps: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_seconds", "rps"])
        writer.writerows([f"{a:.0f}", f"{b:.4f}"] for a, b in zip(t, rps, strict=True))
