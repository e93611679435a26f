"""Memory policy, as plain numbers: the allocator cache limit and OOM messages → ``OutOfMemory``.

The device calls live in ``backends/torch_device.py``; this module decides, it does not touch devices.
"""

from __future__ import annotations

import re

from ..errors import OutOfMemory

MiB = 1024**2
GiB = 1024**3
# The original app kept 20 MB of cached allocator memory for small models and 100 MB for 11B-class ones
# (22 GB of bf16 weights). 0.5 % of the weight bytes reproduces both ends; the clamp keeps tiny models at
# 20 MiB and stops huge ones from hoarding more than 512 MiB.
CACHE_FRACTION = 0.005
CACHE_MIN = 20 * MiB
CACHE_MAX = 512 * MiB


def cache_limit_bytes(weight_bytes: int) -> int:
    """Cached-but-free allocator memory allowed to stay after a generation, sized from the model."""
    return int(min(CACHE_MAX, max(CACHE_MIN, weight_bytes * CACHE_FRACTION)))


def should_trim(reserved_bytes: int, allocated_bytes: int, limit_bytes: int) -> bool:
    return reserved_bytes - allocated_bytes > limit_bytes


_UNITS = {"B": 1, "bytes": 1, "KiB": 1024, "MiB": MiB, "GiB": GiB, "TiB": 1024**4,
          "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_REQUESTED = [
    re.compile(r"Tried to allocate ([\d.]+) ?(B|KiB|MiB|GiB|TiB)"),  # CUDA
    re.compile(r"you tried to allocate (\d+) (bytes)"),  # CPU allocator
    re.compile(r"Tried to allocate ([\d.]+) ?(B|KB|MB|GB|KiB|MiB|GiB)"),  # MPS
]
_OOM_MARKERS = ("out of memory", "can't allocate memory", "outofmemory")


def looks_like_oom(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _OOM_MARKERS)


def requested_bytes(message: str) -> int | None:
    for pattern in _REQUESTED:
        if match := pattern.search(message):
            return int(float(match.group(1)) * _UNITS[match.group(2)])
    return None


def out_of_memory(message: str, *, device: str, free_bytes: int | None, stage: str) -> OutOfMemory:
    """Build the user-facing error from an allocator message and what the device has free now."""
    wanted = requested_bytes(message)
    numbers = []
    if wanted is not None:
        numbers.append(f"needed {wanted / MiB:,.0f} MiB more")
    if free_bytes is not None:
        numbers.append(f"{free_bytes / MiB:,.0f} MiB free")
    detail = f" ({', '.join(numbers)})" if numbers else ""
    return OutOfMemory(f"out of memory on {device} during {stage}{detail}",
                       requested_bytes=wanted, free_bytes=free_bytes, device=device)


def system_available_bytes() -> int | None:
    """Memory the OS can give without swapping (Linux MemAvailable); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(needed_bytes: int, available_bytes: int | None, fraction: float, what: str, device: str) -> None:
    """Refuse a load that would not fit ``fraction`` of what the device has free (no check if unknown)."""
    from ..errors import ModelTooLarge

    if available_bytes is None:
        return
    budget = int(available_bytes * fraction)
    if needed_bytes > budget:
        raise ModelTooLarge(
            f"{what} needs about {human_bytes(needed_bytes)} on {device}, but the budget is {human_bytes(budget)} "
            f"({fraction:.0%} of {human_bytes(available_bytes)} free)",
            needed_bytes=needed_bytes, available_bytes=available_bytes)


def human_bytes(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"
