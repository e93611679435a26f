#!/usr/bin/env python3
"""The fast engine's warm-up at load (compiling, graph capture), cold, in parts and under a few settings: issue #9
asks for ≤ 15 s.

    PYTHONPATH=. python3 bench/fast_warmup.py --size qwen2.5-vl-7b --out $OUT/warmup-7b.json

Each setting loads the engine in a fresh process with empty torch.compile and Triton caches (what a first load
on a new machine sees): the warm-up's total, its parts (``FastBackend.warmup_parts``: the prompt path's first
run, which compiles it, its other buckets, its graph capture; the same for the decode step) and dynamo's own
compile-time table. Settings (``--settings``, run in that order: the first also pays for cold imports and disk
caches): ``default`` (since 2026-11-26 the engine builds torch.compile's kernels in its own process, one after
another); ``worker_pool`` (inductor's pool of compile workers, as torch does by default). ``--second-load`` adds,
after each, a load with the caches it left (every later load on that machine).
Measured: serial 13.8 s against the pool's 15.7 s (source 572053f), 12.4 s against 14.0 s (cc91937;
bench/results/fast_warmup-h100-qwen2.5-vl-3b-*). Tried and dropped: starting the worker pool before the weights
load (compiling in parallel from the first graph): 18.8 s; compiling a two-layer stand-in decoder on a side thread
while the weights load (1004ea6, reverted): the warm-up found every graph compiled, but the side thread took
19.5 s next to the load (GIL-bound) against ~10 s alone, so the warm-up was 17.2 s against 17.3 s without it and
load + warm-up 35.9 s against 33.7 s (…-at-1004ea6-early-compile.json); the same stand-in (one layer, built by
transformers from the config) compiled in a second process started before the weights load (fbed6f7, 4f09410,
reverted): the load found every graph in the cache, but that process took 25-36 s (4-6 s of imports, 6 s to build,
12-16 s to warm up, 2-5 s to exit) against a 9-12 s load, so the warm-up after the load was 30-44 s
(…-at-fbed6f7-early-compile.json, …-at-4f09410-early-compile-alone.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {"default": {},
            "worker_pool": {"TORCHINDUCTOR_COMPILE_THREADS": str(min(32, os.cpu_count() or 1))}}


def child(path: str, device: str, decode_runs: int) -> None:
    import torch

    import optascan
    from bench.inputs import menu_request

    start = time.perf_counter()
    with optascan.load(path, device=device, engine="fast") as fast:
        load_s = time.perf_counter() - start
        backend = fast.backend
        report = {"load_s": load_s, "warmup_s": backend.warmup_s, "warmup_parts": backend.warmup_parts,
                  "compile_times": torch._dynamo.utils.compile_times(repr="str", aggregate=True)}
        # after the warm-up, the decode speed (bench/fast_decode.py's request, 256 tokens): a check that what
        # shortened the warm-up did not slow the step
        speeds = [fast.generate(**menu_request(), max_tokens=256, ignore_eos=True).timings.decode_tokens_per_s
                  for _ in range(decode_runs)]
        print(json.dumps({**report, "decode_tok_s": speeds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="qwen2.5-vl-7b")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--decode-runs", type=int, default=0, help="256-token generations timed after the load")
    parser.add_argument("--second-load", action="store_true", help="after each cold load, one with its caches")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vision", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--checkpoint", help="build the checkpoint here, or reuse the one built here before")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device, args.decode_runs)

    from bench.fast_decode import SIZES
    from bench.inputs import benchmark_checkpoint
    from bench.provenance import header

    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = benchmark_checkpoint(Path(args.checkpoint or Path(tmp) / "ckpt"), args.size,
                                       SIZES.get(args.size) or args.size, dtype, args.vision)
        for name in args.settings.split(","):
            with tempfile.TemporaryDirectory() as caches:
                env = {**os.environ, **SETTINGS[name], "TORCHINDUCTOR_CACHE_DIR": f"{caches}/inductor",
                       "TRITON_CACHE_DIR": f"{caches}/triton"}
                # the first load compiles from nothing; with --second-load, a second process then loads with the
                # caches the first left on disk (every later load on that machine)
                for label in (name, f"{name}_second_load") if args.second_load else (name,):
                    done = subprocess.run([sys.executable, __file__, "--child", str(path), "--device", args.device,
                                           "--decode-runs", str(args.decode_runs), "--out", "-"],
                                          env=env, capture_output=True, text=True, timeout=300)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                    results[label] = json.loads(lines[-1]) if lines else {"error": done.stderr[-2000:]}
                    print(label, {k: v for k, v in results[label].items() if k != "compile_times"}, flush=True)
    report = {**header("fast_warmup", args.size, args.device), "settings": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
