"""Power and energy: NVML on an NVIDIA GPU, otherwise an estimate from utilisation and the profile's watts.

`estimate_watts` is the model: idle + utilisation × (max − idle), utilisation being the fraction of wall
time the runtime spent executing batches. `PowerMeter.sample()` is called periodically; it returns the
current watts and the joules since the previous sample (watts integrated over the interval).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("frugal.serving")


def estimate_watts(utilisation: float, idle_watts: float, max_watts: float) -> float:
    """Linear power model between the profile's idle and max watts."""
    return idle_watts + min(1.0, max(0.0, utilisation)) * (max_watts - idle_watts)


class BusyClock:
    """Accumulates the seconds the runtime spent busy; `utilisation()` reads and resets the window."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._busy = 0.0
        self._since = clock()

    def add(self, seconds: float) -> None:
        self._busy += seconds

    def utilisation(self) -> tuple[float, float]:
        """(busy fraction, window seconds) since the previous call."""
        now = self._clock()
        window, busy = now - self._since, self._busy
        self._since, self._busy = now, 0.0
        if window <= 0:
            return 0.0, 0.0
        return min(1.0, busy / window), window


@dataclass(frozen=True)
class PowerSample:
    watts: float
    joules: float


class PowerSource(Protocol):
    name: str

    def sample(self) -> PowerSample: ...


class EstimatedPower:
    name = "estimate"

    def __init__(self, busy: BusyClock, idle_watts: float, max_watts: float) -> None:
        self._busy, self._idle, self._max = busy, idle_watts, max_watts

    def sample(self) -> PowerSample:
        utilisation, window = self._busy.utilisation()
        watts = estimate_watts(utilisation, self._idle, self._max)
        return PowerSample(watts, watts * window)


class NvmlPower:
    """Board power of the GPU this process uses, read through NVML (nvidia-ml-py)."""

    name = "nvml"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml, self._handle = nvml, handle
        self._last = time.monotonic()

    def sample(self) -> PowerSample:
        watts = self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        now = time.monotonic()
        window, self._last = now - self._last, now
        return PowerSample(watts, watts * window)


def open_nvml() -> NvmlPower | None:
    """NVML for the first visible GPU, or None when the library or a GPU is absent."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        handle = (
            pynvml.nvmlDeviceGetHandleByIndex(int(visible))
            if visible.isdigit()
            else pynvml.nvmlDeviceGetHandleByUUID(visible)
        )
        pynvml.nvmlDeviceGetPowerUsage(handle)
    except Exception as exc:  # ImportError, NVMLError (no driver, no GPU), bad CUDA_VISIBLE_DEVICES
        log.info("NVML power reading unavailable (%s); power will be estimated", exc)
        return None
    return NvmlPower(pynvml, handle)
