"""Performance modes (the app's battery modes) and the thermal check before each generation.

    saver        battery tier images (≈0.4 MP), 128 tokens by default, half the CPU threads — laptops on
                 battery, hot machines
    balanced     balanced tier (≈1 MP), 256 tokens, every CPU thread                  (the default)
    performance  quality tier (2048 px), 512 tokens, every CPU thread

On GPUs the modes change only what optascan controls (image size, reply length). They do not touch the
GPU's power limit or clocks: those are device-wide settings that need root and affect every process on
the card (``nvidia-smi -pl``), not something a library should change behind its user's back.

Thermal: on NVIDIA GPUs the reading comes from NVML (``nvidia-ml-py``) when installed. At the GPU's
slowdown threshold, or when it reports hardware slowdown, the policy either steps the request down to
``saver`` (default) or refuses with ``ThermalThrottled`` (recoverable: retry when it has cooled). Elsewhere
nothing is read and nothing is claimed: ``read_thermal`` returns None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidRequest, ThermalThrottled


@dataclass(frozen=True)
class PerformanceMode:
    name: str
    image_tier: str
    cpu_threads: int
    max_tokens: int  # for requests that leave max_tokens unset


def _threads(share: float) -> int:
    return max(1, int((os.cpu_count() or 1) * share))


MODES = {
    "saver": PerformanceMode("saver", "battery", _threads(0.5), 128),
    "balanced": PerformanceMode("balanced", "balanced", _threads(1.0), 256),
    "performance": PerformanceMode("performance", "quality", _threads(1.0), 512),
}


def mode(name: str) -> PerformanceMode:
    if name not in MODES:
        raise InvalidRequest(f"unknown mode {name!r}; use one of {', '.join(MODES)}", field="mode")
    return MODES[name]


@dataclass(frozen=True)
class ThermalReading:
    device: str
    temperature_c: float
    slowdown_c: float | None  # the GPU's own slowdown threshold, when it reports one
    hardware_slowdown: bool  # the GPU says it is already throttling (thermal or power brake)

    @property
    def hot(self) -> bool:
        return self.hardware_slowdown or (self.slowdown_c is not None and self.temperature_c >= self.slowdown_c)


ThermalReader = Callable[[str], ThermalReading | None]


def read_thermal(device: str) -> ThermalReading | None:
    """NVML reading for a CUDA device; None where nothing trustworthy can be read."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(device.partition(":")[2] or 0))
        temperature = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        try:
            slowdown = pynvml.nvmlDeviceGetTemperatureThreshold(handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        except pynvml.NVMLError:
            slowdown = None
        reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
        braking = (pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
                   | pynvml.nvmlClocksEventReasonSwThermalSlowdown)
        return ThermalReading(device, float(temperature), slowdown, bool(reasons & braking))
    except (pynvml.NVMLError, AttributeError, ValueError):
        return None


def apply_thermal_policy(reading: ThermalReading | None, tier: str, policy: str) -> str:
    """The image tier to use given the reading: unchanged, stepped down to saver's, or ThermalThrottled."""
    if reading is None or not reading.hot:
        return tier
    if policy == "refuse":
        raise ThermalThrottled(
            f"{reading.device} is at {reading.temperature_c:.0f} °C"
            + (f" (slowdown at {reading.slowdown_c:.0f} °C)" if reading.slowdown_c is not None else "")
            + (" and throttling" if reading.hardware_slowdown else ""),
            temperature_c=reading.temperature_c)
    return MODES["saver"].image_tier
