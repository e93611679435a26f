"""``optascan status``: devices, free and used memory, temperatures, modes, and what is installed."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..engine.memory import human_bytes, system_available_bytes
from ..engine.modes import MODES, read_thermal


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="show devices, memory, temperatures and modes",
                            description="Show the devices optascan can use, their free and total memory, GPU "
                                        "temperatures (NVIDIA, with nvidia-ml-py), the performance modes and the "
                                        "installed models. Models loaded by a server are listed by the server's "
                                        "/api/status.")
    p.add_argument("--json", action="store_true", help="print JSON")


def collect() -> dict:
    import torch

    from ..models.store import installed_models

    devices = [{"device": "cpu", "cores": os.cpu_count(), "free_bytes": system_available_bytes(),
                "threads": torch.get_num_threads()}]
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        reading = read_thermal(f"cuda:{index}")
        devices.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index), "free_bytes": free,
                        "total_bytes": total, "temperature_c": reading.temperature_c if reading else None,
                        "throttling": reading.hot if reading else None})
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append({"device": "mps", "recommended_max_bytes": torch.mps.recommended_max_memory(),
                        "allocated_bytes": torch.mps.driver_allocated_memory()})
    return {"devices": devices, "modes": {m.name: {"image_tier": m.image_tier, "cpu_threads": m.cpu_threads}
                                          for m in MODES.values()},
            "installed": [{"repo_id": m.repo_id, "bytes": m.size_on_disk} for m in installed_models()]}


def run(args: argparse.Namespace) -> int:
    status = collect()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for d in status["devices"]:
        parts = [d["device"], d.get("name") or (f"{d['cores']} cores" if d["device"] == "cpu" else "")]
        if d.get("free_bytes") is not None:
            parts.append(f"{human_bytes(d['free_bytes'])} free"
                         + (f" of {human_bytes(d['total_bytes'])}" if d.get("total_bytes") else ""))
        if d.get("temperature_c") is not None:
            parts.append(f"{d['temperature_c']:.0f} °C" + (" THROTTLING" if d["throttling"] else ""))
        elif d["device"].startswith("cuda"):
            parts.append("temperature: not readable (install nvidia-ml-py)")
        print("  ".join(p for p in parts if p))
    print("modes: " + ", ".join(f"{name} ({m['image_tier']} images, {m['cpu_threads']} CPU threads)"
                                for name, m in status["modes"].items()))
    print(f"installed models: {len(status['installed'])} (see 'optascan models')")
    return 0
