"""What every benchmark result records about where it came from (imported by the bench scripts)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> dict:
    """{"commit": sha or None, "dirty": whether tracked files differ from it (None outside a checkout)}."""
    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    report = {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}
    # the device tool copies the working tree but keeps the .git of its first call in a session, so a GPU run
    # says which commit it ran in the command line: OPTASCAN_SOURCE_COMMIT=<sha> python3 bench/...
    if os.environ.get("OPTASCAN_SOURCE_COMMIT"):
        report["source_commit"] = os.environ["OPTASCAN_SOURCE_COMMIT"]
    return report


def header(benchmark: str, size: str, device: str) -> dict:
    """The fields a fast-engine benchmark's JSON opens with: what ran, from which commit, when, on what."""
    import datetime

    import torch

    return {"benchmark": benchmark, "size": size, **git_commit(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
            "versions": {"torch": torch.__version__}}
