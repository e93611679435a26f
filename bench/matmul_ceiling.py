#!/usr/bin/env python3
"""How close one-row matmuls alone get to the bandwidth ceiling on this GPU: the floor under any decode step
built from them (issue #9's evidence for what limits the fast engine).

    PYTHONPATH=. python3 bench/matmul_ceiling.py --size qwen2.5-vl-3b --out $OUT/matmul-3b.json

For a language model's shapes (random bf16 weights): every layer's projections (fused q/k/v, o, fused gate/up,
down) and the head, one token's row through each, replayed as one CUDA graph — nothing but the matmuls of a
decode step. Reported per shape too, so a slow shape shows. ``--impl`` picks the matmul: torch's ``F.linear``
(cuBLAS), ``compiled`` (the same through torch.compile, which may pick a Triton kernel), or ``triton`` (the fast
engine's experimental one-row kernel, optascan/engine/backends/fast/gemv.py).
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

from bench.fast_decode import SIZES, bandwidth  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast import gemv  # noqa: E402


def shapes(size: str) -> dict[str, tuple[int, int]]:
    c = SIZES[size]
    hidden, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = hidden // heads
    return {"qkv": ((heads + 2 * kv) * head_dim, hidden), "o": (hidden, hidden),
            "gate_up": (2 * c["intermediate_size"], hidden), "down": (hidden, c["intermediate_size"]),
            "head": (c["vocab_size"], hidden)}


def graph_time(fn, reps: int = 20) -> float:
    """Median seconds of one replay of ``fn`` captured as a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="qwen2.5-vl-3b", choices=list(SIZES))
    parser.add_argument("--impl", default="linear", choices=["linear", "compiled", "triton"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    layers = SIZES[args.size]["num_hidden_layers"]
    linear = {"linear": F.linear, "compiled": torch.compile(F.linear, dynamic=False), "triton": gemv.linear}[args.impl]
    table = shapes(args.size)
    weights = {name: [torch.randn(shape, dtype=torch.bfloat16, device="cuda") * 0.02
                      for _ in range(1 if name == "head" else layers)] for name, shape in table.items()}
    rows = {name: torch.randn(1, shape[1], dtype=torch.bfloat16, device="cuda") for name, shape in table.items()}
    per_shape = {}
    for name, shape in table.items():
        w, x = weights[name][0], rows[name]
        seconds = graph_time(lambda w=w, x=x: [linear(x, w) for _ in range(10)]) / 10
        per_shape[name] = {"shape": list(shape), "us": seconds * 1e6,
                           "fraction_of_bandwidth": w.numel() * 2 / seconds / bandwidth()}

    def whole_step() -> None:
        for i in range(layers):
            for name in ("qkv", "o", "gate_up", "down"):
                linear(rows[name], weights[name][i])
        linear(rows["head"], weights["head"][0])

    step = graph_time(whole_step)
    total_bytes = sum(w.numel() * 2 for ws in weights.values() for w in ws)
    report = {"benchmark": "matmul_ceiling", "size": args.size, "impl": args.impl, **git_commit(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "versions": {"torch": torch.__version__},
              "per_shape": per_shape, "matmuls_only_step_ms": step * 1000, "weight_bytes": total_bytes,
              "matmuls_only_tok_s": 1 / step, "ceiling_tok_s": bandwidth() / total_bytes,
              "matmuls_only_fraction_of_ceiling": total_bytes / step / bandwidth()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
