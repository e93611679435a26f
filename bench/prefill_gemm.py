#!/usr/bin/env python3
"""How fast the prompt's matmuls can run at a prefill bucket's length, and how much of our prefill they are: the
evidence for where LLaVA's time to first token can still shrink (issue #9).

    PYTHONPATH=. python3 bench/prefill_gemm.py --size llava-1.5-7b --tokens 640 --out $OUT/prefill-gemm.json

Two parts, random bf16 weights of the size's language model (bench/fast_decode.py's SIZES):
- per projection shape (fused q/k/v, o, fused gate/up, down) with ``--tokens`` rows: µs and TFLOP/s through
  cuBLAS (torch's default), cuBLASLt (``preferred_blas_library``) and inductor's max-autotune (Triton templates
  raced against cuBLAS; its tuning time is reported, since it would count against the 15 s warm-up);
- the whole decoder's prefill (our CompactDecoder, compiled as the engine compiles it) replayed as a CUDA graph,
  with its kernels by kind (matmul / attention / other) under torch.profiler, for the same matmul choices.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fast_decode import SIZES  # noqa: E402
from bench.matmul_ceiling import graph_time  # noqa: E402
from bench.profile_fast_step import kernel_us_by_name, kind_of  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast.decoder import CompactDecoder, DecoderShape  # noqa: E402

DTYPE = torch.bfloat16


def graph_ms(fn) -> float:
    """Median ms of one replay of ``fn`` captured as a CUDA graph."""
    return graph_time(fn) * 1000


def projection_shapes(c: dict) -> dict[str, tuple[int, int]]:
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    qkv = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * head_dim
    return {"qkv": (qkv, c["hidden_size"]), "o": (c["hidden_size"], c["hidden_size"]),
            "gate_up": (2 * c["intermediate_size"], c["hidden_size"]),
            "down": (c["hidden_size"], c["intermediate_size"])}


def set_blas(name: str) -> None:
    torch.backends.cuda.preferred_blas_library("cublaslt" if name == "cublaslt" else "cublas")


def per_shape(c: dict, tokens: int, impls: list[str]) -> dict:
    report = {}
    for label, (out_features, in_features) in projection_shapes(c).items():
        x = torch.randn(1, tokens, in_features, dtype=DTYPE, device="cuda")
        # two weights used in turn, so a replay does not find the previous one's weight in L2
        weights = [torch.randn(out_features, in_features, dtype=DTYPE, device="cuda") * 0.02 for _ in range(2)]
        flops = 2 * tokens * out_features * in_features
        row = {"shape": [tokens, out_features, in_features]}
        for impl in impls:
            set_blas(impl)
            fn, tune_s = F.linear, 0.0
            if impl == "max_autotune":
                fn = torch.compile(F.linear, mode="max-autotune-no-cudagraphs", dynamic=False)
                start = time.perf_counter()
                fn(x, weights[0])
                torch.cuda.synchronize()
                tune_s = time.perf_counter() - start
            ms = graph_ms(lambda fn=fn, x=x, weights=weights: [fn(x, w) for w in weights]) / len(weights)
            row[impl] = {"us": ms * 1000, "tflops": flops / ms / 1e9, **({"tune_s": tune_s} if tune_s else {})}
        set_blas("cublas")
        report[label] = row
        print(label, {k: (round(v["us"], 1), round(v["tflops"])) for k, v in row.items() if k != "shape"},
              flush=True)
    return report


def random_decoder(c: dict, max_tokens: int) -> CompactDecoder:
    """Our decoder with random weights of the size (no checkpoint: only the prefill's arithmetic matters here)."""
    hidden, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = hidden // heads
    shape = DecoderShape(layers=c["num_hidden_layers"], hidden=hidden, heads=heads, kv_heads=kv, head_dim=head_dim,
                         intermediate=c["intermediate_size"], eps=1e-6, qkv_bias=False, mrope_section=None)
    decoder = CompactDecoder(shape, max_tokens=max_tokens, dtype=DTYPE, device="cuda")

    def linear(out_features: int, in_features: int) -> nn.Linear:
        layer = nn.Linear(in_features, out_features, bias=False, device="cuda", dtype=DTYPE)
        nn.init.normal_(layer.weight, std=0.02)
        return layer

    q, (o_out, o_in), (gu, _), (down_out, down_in) = projection_shapes(c).values()
    for _ in range(shape.layers):
        decoder.qkv_weight.append(linear(*q).weight)
        decoder.qkv_bias.append(None)
        decoder.gate_up_weight.append(linear(gu, hidden).weight)
        decoder.o.append(linear(o_out, o_in))
        decoder.down.append(linear(down_out, down_in))
        decoder.norm_in.append(torch.ones(hidden, dtype=DTYPE, device="cuda"))
        decoder.norm_post.append(torch.ones(hidden, dtype=DTYPE, device="cuda"))
    decoder.norm_final = torch.ones(hidden, dtype=DTYPE, device="cuda")
    decoder.embed = nn.Embedding(c["vocab_size"], hidden, device="cuda", dtype=DTYPE)
    decoder.lm_head = linear(c["vocab_size"], hidden)
    decoder.inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim))
    return decoder.eval()


def whole_prefill(decoder: CompactDecoder, tokens: int, impl: str) -> dict:
    set_blas(impl)
    fns = (decoder.prefill_fns if impl != "max_autotune" else
           tuple(torch.compile(getattr(fn, "_torchdynamo_orig_callable", fn), fullgraph=True,
                               mode="max-autotune-no-cudagraphs") for fn in decoder.prefill_fns))
    saved, decoder.prefill_fns = decoder.prefill_fns, fns
    embeds = torch.randn(1, tokens, decoder.shape.hidden, dtype=DTYPE, device="cuda") * 0.02
    cos, sin = decoder.rotary(decoder.prompt_positions(tokens))
    last = torch.tensor([tokens - 1], device="cuda")
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            decoder(embeds, 0, cos, sin, last=last)
            torch.cuda.synchronize()
            first_s = time.perf_counter() - start
            ms = graph_ms(lambda: decoder(embeds, 0, cos, sin, last=last))
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                decoder(embeds, 0, cos, sin, last=last)
                torch.cuda.synchronize()
    finally:
        decoder.prefill_fns = saved
        set_blas("cublas")
    by_name, count = kernel_us_by_name(prof, True)
    by_kind: dict[str, float] = {}
    for name, spent in by_name.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + spent / 1000
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    report = {"graph_ms": ms, "first_call_s": first_s, "kernels": count, "kernel_ms_by_kind": by_kind,
              "top_kernels_ms": {name[:90]: spent / 1000 for name, spent in top}}
    print(impl, "prefill graph", round(ms, 2), "ms", {k: round(v, 2) for k, v in by_kind.items()}, flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="llava-1.5-7b", choices=sorted(SIZES))
    parser.add_argument("--tokens", type=int, default=640, help="rows: the prefill bucket (default 640)")
    parser.add_argument("--impls", default="cublas,cublaslt,max_autotune")
    parser.add_argument("--whole", default="cublas,cublaslt", help="matmul choices for the whole prefill")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    c = SIZES[args.size]
    report = {"benchmark": "prefill_gemm", "size": args.size, "tokens": args.tokens, **git_commit(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "versions": {"torch": torch.__version__}}
    report["per_shape"] = per_shape(c, args.tokens, args.impls.split(","))
    layers = c["num_hidden_layers"]
    for impl in args.impls.split(","):
        report[f"matmuls_only_ms_{impl}"] = layers * sum(row[impl]["us"] for row in report["per_shape"].values()) / 1e3
    decoder = random_decoder(c, max_tokens=args.tokens + 64)
    decoder.compile_layers()
    report["whole_prefill"] = {impl: whole_prefill(decoder, args.tokens, impl) for impl in args.whole.split(",")}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("matmuls_only")}))


if __name__ == "__main__":
    main()
