#!/usr/bin/env python3
"""Where the fast engine's warm-up at load goes, by host function: the evidence for issue #9's warm-up target.

    PYTHONPATH=. python3 bench/profile_warmup.py --size qwen2.5-vl-3b --out $OUT/profile-warmup-3b.json

Two fresh processes on bench/fast_decode.py's checkpoint: the first with empty torch.compile and Triton caches
(a first load on a new machine), the second with the caches the first left. Each runs the warm-up
(``FastBackend._warm_up``) under cProfile and reports its total, the functions with the most cumulative and own
time, and the Triton compiles (``triton.compiler.compile``: our kernels' and inductor's), with their callers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(path: str, device: str) -> None:
    import torch

    import optascan
    from optascan.engine.backends.fast.backend import FastBackend

    profiler = cProfile.Profile()
    timing: dict[str, float] = {}
    warm_up = FastBackend._warm_up

    def profiled(self, compile_step):
        start = time.perf_counter()
        profiler.enable()
        try:
            return warm_up(self, compile_step)
        finally:
            profiler.disable()
            timing["profiled_warm_up_s"] = time.perf_counter() - start

    FastBackend._warm_up = profiled
    with optascan.load(path, device=device, engine="fast") as fast:
        report = {**timing, "warmup_s": fast.backend.warmup_s,
                  "warmup_parts": {k: v for k, v in fast.backend.warmup_parts.items() if isinstance(v, float)}}
    stats = pstats.Stats(profiler)
    for sort, count in (("cumulative", 70), ("tottime", 40)):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(count)
        report[f"top_{sort}"] = text.getvalue()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_callers(r"compiler\.py.*\(compile\)")
    report["triton_compile_callers"] = text.getvalue()[-6000:]
    compiles = [(k, v) for k, v in stats.stats.items() if k[2] == "compile" and k[0].endswith("compiler/compiler.py")]
    report["triton_compiles"] = [{"calls": v[1], "cumulative_s": v[3]} for _, v in compiles]
    report["compile_times"] = torch._dynamo.utils.compile_times(repr="str", aggregate=True)
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="qwen2.5-vl-3b")
    parser.add_argument("--vision", choices=["tiny", "full"], default="full")
    parser.add_argument("--checkpoint", help="build the checkpoint here, or reuse the one built here before")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device)

    from bench.fast_decode import SIZES
    from bench.inputs import benchmark_checkpoint
    from bench.provenance import header

    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    runs = {}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as caches:
        path, _ = benchmark_checkpoint(Path(args.checkpoint or Path(tmp) / "ckpt"), args.size,
                                       SIZES.get(args.size) or args.size, dtype, args.vision)
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{caches}/inductor", "TRITON_CACHE_DIR": f"{caches}/triton"}
        for label in ("cold", "cached"):
            done = subprocess.run([sys.executable, __file__, "--child", str(path), "--device", args.device,
                                   "--out", "-"], env=env, capture_output=True, text=True, timeout=300)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            runs[label] = json.loads(lines[-1]) if lines else {"error": done.stderr[-3000:]}
            print(label, {k: v for k, v in runs[label].items() if k.endswith("_s") or k == "triton_compiles"},
                  flush=True)
    report = {**header("profile_warmup", args.size, args.device), "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
