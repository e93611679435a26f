#!/usr/bin/env python3
"""What the fast engine's peak GPU memory is made of: the allocations alive at the peak, by where they were made
(issue #9's LLaVA peak is ~2 GB above its weights and KV cache; this says which code holds it).

    PYTHONPATH=. python3 bench/memory_peak.py --size llava-1.5-7b --vision full --out $OUT/memory-llava.json

Records the CUDA caching allocator's history (torch.cuda.memory._record_memory_history) over a load of the fast
engine and one request on bench/fast_decode.py's checkpoint, replays its allocations and frees to find the
moment of the peak, and groups what was alive then by the innermost optascan (else transformers, else torch)
frame of each allocation's stack.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.fast_decode import SIZES  # noqa: E402
from bench.inputs import benchmark_checkpoint, menu_request  # noqa: E402
from bench.provenance import git_commit  # noqa: E402

PREFERRED = ("/optascan/", "/transformers/", "/torch/")


def where(frames: list[dict]) -> str:
    """The most telling frame of an allocation: the innermost of ours, else of transformers, else of torch."""
    for part in PREFERRED:
        for frame in frames:
            if part in frame["filename"] and "memory_peak" not in frame["filename"]:
                short = frame["filename"].split(part, 1)[1]
                return f"{part.strip('/')}/{short}:{frame['line']} {frame['name']}"
    return "?"


def live_at_peak(snapshot: dict) -> tuple[int, dict[str, int], list[str]]:
    """Replay the trace: the peak of allocated bytes, what was alive then (bytes by site) and the last actions
    before it."""
    live: dict[int, tuple[int, str]] = {}
    total, peak, at_peak, recent = 0, 0, {}, []
    for trace in snapshot["device_traces"]:
        for event in trace:
            action, address, size = event["action"], event["addr"], event["size"]
            if action == "alloc":
                live[address] = (size, where(event.get("frames", [])))
                total += size
            elif action == "free_completed" and address in live:
                total -= live.pop(address)[0]
            recent = (recent + [f"{action} {size / 2**20:.0f} MiB {where(event.get('frames', []))}"])[-12:]
            if total > peak:
                peak, at_peak, before = total, dict(live), list(recent)
    by_site: dict[str, int] = {}
    for size, site in at_peak.values():
        by_site[site] = by_site.get(site, 0) + size
    return peak, dict(sorted(by_site.items(), key=lambda kv: -kv[1])[:25]), before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="llava-1.5-7b", choices=sorted(SIZES))
    parser.add_argument("--vision", choices=["tiny", "full"], default="full")
    parser.add_argument("--checkpoint", help="build the checkpoint here, or reuse the one built here before")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, family = benchmark_checkpoint(Path(args.checkpoint or Path(tmp) / "ckpt"),
                                            "llava" if args.size.startswith("llava") else args.size,
                                            SIZES[args.size], "bfloat16", args.vision)
        torch.cuda.memory._record_memory_history(max_entries=1_000_000)
        with optascan.load(path, device="cuda", engine="fast") as fast:
            loaded = torch.cuda.memory_allocated()
            fast.generate(**menu_request(), max_tokens=8, ignore_eos=True)
            snapshot = torch.cuda.memory._snapshot()
            peak_reported = torch.cuda.max_memory_allocated()
        torch.cuda.memory._record_memory_history(enabled=None)
    peak, by_site, before = live_at_peak(snapshot)
    report = {"benchmark": "memory_peak", "size": args.size, "family": family, "vision": args.vision,
              **git_commit(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "versions": {"torch": torch.__version__},
              "allocated_after_load_bytes": loaded, "max_memory_allocated_bytes": peak_reported,
              "replayed_peak_bytes": peak, "alive_at_peak_bytes_by_site": by_site, "events_before_peak": before}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
