#!/usr/bin/env python3
"""Where a fast-engine decode step spends its time on the GPU: the evidence issue #9 asks for when decode stays
short of the bandwidth ceiling.

    PYTHONPATH=. python3 bench/profile_fast_step.py --size qwen2.5-vl-3b --out $OUT/profile-3b.json

For the one-token step as the engine loads it and with one part switched off (bench/fast_decode.py's VARIANTS:
SDPA attention instead of our kernel, the step uncompiled), at ``--slot`` (default 1,100: the benchmark's
prompt of ~1,023 tokens, so the 2,048-slot cache bucket): the step's time as a graph replay, and
under torch.profiler (eager, so every kernel is visible) the number of kernels per step and the GPU time by kernel
kind (matmul, attention, everything else) with the top kernels by name. Bandwidth arithmetic: the weight bytes a
step must read ÷ the GPU's bandwidth is the floor; what is above it is what the kernels cost beyond reading weights.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.fast_decode import SIZES, VARIANTS, bandwidth, use_variant, weight_bytes  # noqa: E402
from bench.inputs import benchmark_checkpoint  # noqa: E402
from bench.provenance import git_commit  # noqa: E402


def kind_of(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ("gemm", "gemv", "cutlass", "sm90_xmma", "matmul", "splitk", "nvjet")):
        return "matmul"
    if any(k in lowered for k in ("flash", "fmha", "attention", "softmax", "_partial_kernel", "_merge_kernel")):
        return "attention"
    return "other"


def kernel_us_by_name(prof, cuda: bool) -> tuple[dict[str, float], int]:
    """A torch.profiler run's kernels: each name's total time in µs, and how many ran. On the GPU its kernels'
    own spans (not the operators', whose rows repeat their kernels' time); off it, the aten operators' CPU spans."""
    device_type = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    by_name: dict[str, float] = {}
    count = 0
    for event in prof.events():
        if event.device_type == device_type and (cuda or event.name.startswith("aten::")):
            by_name[event.name] = by_name.get(event.name, 0.0) + event.time_range.elapsed_us()
            count += 1
    return by_name, count


def profile(fast, steps: int, cuda: bool, slot: int) -> dict:
    loop = fast.backend.decode_loop
    length = loop.bucket(slot)

    def one_step() -> None:
        if cuda:
            loop.graphs["greedy", length].replay()
        else:  # a smoke run off the GPU: the eager step
            loop._body("greedy", length)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    with torch.inference_mode():
        loop.index.fill_(slot)
        loop.rope.fill_(slot)
        for _ in range(5):  # graph replays: the real per-token cost
            one_step()
        sync()
        times = []
        for _ in range(steps):
            loop.index.fill_(slot)
            start = time.perf_counter()
            one_step()
            sync()
            times.append(time.perf_counter() - start)
        with torch.profiler.profile(activities=[activity]) as prof:
            for _ in range(10):
                loop.index.fill_(slot)
                loop._body("greedy", length)
            sync()
    total_us, count = kernel_us_by_name(prof, cuda)
    by_name = {name: spent / 10 for name, spent in total_us.items()}
    by_kind: dict[str, float] = {}
    for name, spent in by_name.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + spent
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:15]
    return {"graph_step_ms": statistics.median(times) * 1000, "kernels_per_step": count / 10,
            "kernel_us_per_step_by_kind": by_kind, "top_kernels_us_per_step": dict(top), "bucket": length}


def profile_prefill(fast, tokens: int, cuda: bool) -> dict:
    """Our decoder's prefill of ``tokens`` prompt embeddings (random, as the vision merge would hand them): its
    time and the kernels it spends it in — the language model's share of time to first token."""
    decoder = fast.backend.decoder
    hidden = decoder.embed.weight.shape[1]
    embeds = torch.randn(1, tokens, hidden, dtype=decoder.k_cache.dtype, device=decoder.k_cache.device) * 0.02
    positions = decoder.prompt_positions(tokens)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        times = []
        for _ in range(6):
            sync()
            start = time.perf_counter()
            decoder(embeds, 0, *decoder.rotary(positions))
            sync()
            times.append(time.perf_counter() - start)
        activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[activity]) as prof:
            decoder(embeds, 0, *decoder.rotary(positions))
            sync()
    by_name, _ = kernel_us_by_name(prof, cuda)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:15]
    graphs, graph_times = fast.backend.prefill_graphs, []
    if graphs is not None:
        with torch.inference_mode():
            for _ in range(6):
                sync()
                start = time.perf_counter()
                graphs.run(embeds, positions)
                sync()
                graph_times.append(time.perf_counter() - start)
    return {"tokens": tokens, "prefill_ms": statistics.median(times[1:]) * 1000,
            "prefill_graph_ms": statistics.median(graph_times[1:]) * 1000 if graph_times else None,
            "kernel_ms": sum(by_name.values()) / 1000, "top_kernels_us": dict(top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="qwen2.5-vl-3b", choices=[*SIZES, "small"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--slot", type=int, default=1100, help="the new token's cache slot")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict = {"benchmark": "profile_fast_step", "size": args.size, **git_commit(),
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
                    "versions": {"torch": torch.__version__, "optascan": optascan.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        cuda = args.device == "cuda"
        path, _ = benchmark_checkpoint(Path(tmp) / "ckpt", args.size, SIZES.get(args.size, args.size),
                                       "bfloat16" if cuda else None)
        for name in args.variants.split(","):
            use_variant(name)
            with optascan.load(path, device=args.device, engine="fast") as fast:
                lm = fast.backend.language_model
                report["floor_ms"] = weight_bytes(lm, fast.backend.model.lm_head) / bandwidth() * 1000
                report[name] = profile(fast, args.steps, cuda, args.slot)
                report[name]["prefill"] = profile_prefill(fast, args.slot - 77, cuda)
                report[name]["warmup_s"] = fast.backend.warmup_s
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
