"""``optascan models``: the catalog, what is installed, sizes and where."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import OptascanError
from ..models.catalog import CATALOG
from ..models.estimate import estimate
from ..models.resolve import DEMO_DIR
from ..models.store import installed_models


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="list the catalog and the installed models",
                            description="List the model catalog and what is installed in the local Hugging Face "
                                        "cache (shared with other HF tools), with sizes and paths. MEMORY is what "
                                        "loading in bf16 and one 4,096-token request with an image need; for "
                                        "installed models it is read from their config and weight headers.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    installed = {m.repo_id: m for m in installed_models()}
    rows = []
    for entry in CATALOG:
        local = installed.pop(entry.repo_id, None) if entry.repo_id else None
        shipped = entry.repo_id is None and (DEMO_DIR / "model.safetensors").is_file()
        rows.append({"name": entry.name, "repo_id": entry.repo_id, "download_bytes": entry.download_bytes,
                     "params": entry.params, "memory_bytes": entry.memory_bytes, "licence": entry.licence,
                     "gated": entry.gated, "installed": bool(local) or shipped,
                     "size_on_disk": local.size_on_disk if local else None,
                     "path": str(local.path) if local else (str(DEMO_DIR) if shipped else None)})
    for local in installed.values():  # hub repos pulled by name, outside the catalog
        rows.append({"name": local.repo_id, "repo_id": local.repo_id, "download_bytes": None, "params": None,
                     "memory_bytes": None, "licence": None, "gated": None, "installed": True,
                     "size_on_disk": local.size_on_disk, "path": str(local.path)})
    for row in rows:  # installed: measure from the files rather than the catalog's rounded numbers
        if row["installed"] and row["path"]:
            measured = _estimate(row["path"])
            if measured is not None:
                row["params"], row["memory_bytes"] = measured.params, measured.total_bytes
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':<22} {'SIZE':>8} {'PARAMS':>7} {'MEMORY':>8}  {'INSTALLED':<10} LICENCE / PATH")
    for row in rows:
        state = "yes" if row["installed"] else "-"
        where = row["path"] if row["installed"] else (row["licence"] or "") + (" (gated)" if row["gated"] else "")
        print(f"{row['name']:<22} {_size(row['size_on_disk'] or row['download_bytes']):>8} "
              f"{_count(row['params']):>7} {_size(row['memory_bytes']):>8}  {state:<10} {where}")
    return 0


def _estimate(path: str):
    """bf16 weights + a 4,096-token context with one 1024×768 image; None if the files cannot tell."""
    try:
        return estimate(path, dtype="bfloat16")
    except (OptascanError, OSError, KeyError, ValueError):
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
