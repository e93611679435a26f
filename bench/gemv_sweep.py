#!/usr/bin/env python3
"""Which tile of the fast engine's one-row projection kernel (optascan/engine/backends/fast/gemv.py) reads each
decode-step weight fastest on this GPU, next to cuBLAS (``F.linear``) on the same weight — side by side, one run.

    PYTHONPATH=. python3 bench/gemv_sweep.py --sizes qwen2.5-vl-3b,qwen2.5-vl-7b --out $OUT/gemv_sweep.json

For each projection of each language model (random bf16 weights, the public model cards' shapes): cuBLAS, the
kernel's default tile, and every tile of a grid, each timed as 10 calls replayed in one CUDA graph. The gate/up
projection is timed as the engine runs it: cuBLAS plus SiLU·up against the kernel's fused gated form.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fast_decode import bandwidth  # noqa: E402
from bench.matmul_ceiling import graph_time, shapes  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast import gemv  # noqa: E402

TILES = [gemv.Tile(rows, cols, warps) for rows, cols in
         ((1, 512), (1, 1024), (1, 2048), (2, 256), (2, 512), (2, 1024), (2, 2048), (4, 256), (4, 512), (4, 1024),
          (4, 2048), (8, 256), (8, 512), (8, 1024), (16, 256), (16, 512))
         for warps in (2, 4, 8)]


def cublas_gated(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, w).chunk(2, dim=-1)
    return F.silu(gate) * up


def sweep(name: str, shape: tuple[int, int]) -> dict:
    n, k = shape
    w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
    x = torch.randn(1, 1, k, dtype=torch.bfloat16, device="cuda")
    gated = name == "gate_up"
    kernel_rows = n // 2 if gated else n

    def timed(fn) -> float:
        return graph_time(lambda: [fn() for _ in range(10)]) / 10

    def ours(tile):
        return (lambda: gemv.gated_linear(x, w, tile)) if gated else (lambda: gemv.linear(x, w, tile=tile))

    reference = cublas_gated(x.float(), w.float()) if gated else F.linear(x.float(), w.float())
    error = ((ours(None)().float() - reference).abs().max() / reference.abs().max()).item()
    to_fraction = w.numel() * 2 / bandwidth()
    cublas = timed((lambda: cublas_gated(x, w)) if gated else (lambda: F.linear(x, w)))
    default = gemv.default_tile(kernel_rows, k, gated)
    tiles = {}
    for tile in TILES:
        if tile.cols > max(16, 2 * k):
            continue
        try:
            tiles[",".join(map(str, tile))] = timed(ours(tile))
        except Exception as error_:  # a tile that does not compile or fit is skipped, and said
            tiles[",".join(map(str, tile))] = repr(error_)[:200]
    times = {t: s for t, s in tiles.items() if isinstance(s, float)}
    best = min(times, key=times.get)
    return {"shape": [n, k], "gated": gated, "relative_error": error,
            "cublas_us": cublas * 1e6, "cublas_fraction": to_fraction / cublas,
            "default_tile": list(default), "default_us": timed(ours(default)) * 1e6,
            "best_tile": [int(v) for v in best.split(",")], "best_us": times[best] * 1e6,
            "best_fraction": to_fraction / times[best], "tiles_us": {t: (s * 1e6 if isinstance(s, float) else s)
                                                                   for t, s in tiles.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="qwen2.5-vl-3b")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {}
    for size in args.sizes.split(","):
        results[size] = {name: sweep(name, shape) for name, shape in shapes(size).items()}
        for name, r in results[size].items():
            print(size, name, r["shape"], f"cublas {r['cublas_us']:.2f} us ({r['cublas_fraction']:.0%})",
                  f"default {r['default_tile']} {r['default_us']:.2f}",
                  f"best {r['best_tile']} {r['best_us']:.2f} us ({r['best_fraction']:.0%})", flush=True)
    report = {"benchmark": "gemv_sweep", **git_commit(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "bandwidth_bytes_s": bandwidth(),
              "versions": {"torch": torch.__version__, "triton": gemv.triton.__version__}, "sizes": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
