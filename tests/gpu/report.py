"""Shared runner for the GPU-tier scripts: run every check, record what each measured, write one JSON report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers

import optascan


def run_checks(checks: Sequence[Callable[[dict], None]], out: str | Path, device: str = "cuda") -> int:
    """Call each check with a dict it fills; a failure is recorded and the rest still run. Returns the exit code."""
    results = []
    for check in checks:
        name = getattr(check, "__name__", None) or check.func.__name__  # plain functions or functools.partial
        record: dict = {}
        try:
            check(record)
            results.append({"check": name, "passed": True, **record})
        except Exception as err:  # noqa: BLE001 - report every check
            results.append({"check": name, "passed": False, "error": repr(err),
                            "traceback": traceback.format_exc()[-2000:], **record})
        print(("PASS " if results[-1]["passed"] else "FAIL ") + name, flush=True)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # the device tool keeps a stale .git: the command line says which commit ran (OPTASCAN_SOURCE_COMMIT)
        **({"source_commit": os.environ["OPTASCAN_SOURCE_COMMIT"]} if os.environ.get("OPTASCAN_SOURCE_COMMIT")
           else {}),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available()
        else platform.processor() or platform.machine(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "optascan": optascan.__version__},
        "passed": sum(r["passed"] for r in results), "failed": sum(not r["passed"] for r in results),
        "checks": results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2, default=str))
    print(f"{report['passed']} passed, {report['failed']} failed")
    return 0 if report["failed"] == 0 else 1
