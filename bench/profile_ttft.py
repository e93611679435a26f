#!/usr/bin/env python3
"""Where the fast engine's time to first token goes, stage by stage, with the host's hot functions: the evidence
issue #9 asks for where TTFT stays above half of transformers'.

    PYTHONPATH=. python3 bench/profile_ttft.py --size qwen2.5-vl-3b --out $OUT/ttft-3b.json

On bench/fast_decode.py's checkpoint and request: each stage timed with the GPU synchronised at its ends (median
of ``--runs``): image intake, the template + processor (``prepare``), the vision tower and merge up to the
language model (transformers' code), our decoder's prefill, the first token's choice; then the same stages,
unsynchronised, under cProfile, for the host functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.fast_decode import SIZES, sync  # noqa: E402
from bench.inputs import benchmark_checkpoint, menu_photo, menu_request  # noqa: E402
from bench.profile_fast_step import kernel_us_by_name  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast.graphs import intervals  # noqa: E402
from optascan.engine.conversation import to_conversation  # noqa: E402
from optascan.images.prepare import prepare_image  # noqa: E402
from optascan.testing.tiny import TEXT_SIZES  # noqa: E402
from optascan.types import Request  # noqa: E402


def stages(backend, conversation, photo, device: str) -> dict[str, float]:
    """One pass through the time to first token's stages; seconds per stage (GPU synchronised at each end)."""
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())

    image = prepare_image(photo, tier="quality", limits=backend.image_limits)
    mark()
    prepared = backend.prepare(conversation, [image.image])
    mark()
    with torch.inference_mode():
        embeds, positions = backend._prefill_inputs(prepared.inputs)
        mark()
        graphs = backend.prefill_graphs
        logits = graphs.run(embeds, positions) if graphs is not None else None
        if logits is None:
            logits = backend.decoder(embeds, 0, *backend.decoder.rotary(positions))
        mark()
        int(logits[0, -1].argmax())
        mark()
    names = ("image_intake", "template_and_processor", "vision_and_merge", "decoder_prefill", "first_token")
    return intervals(names, marks)


def vision_kernels(backend, prepared, runs: int, device: str) -> dict:
    """The vision tower and merge (``_prefill_inputs``) under torch.profiler: its wall time per pass against the
    GPU's kernel time per pass, and the kernels with the most time. Kernel time well under wall time means the
    host (Python, launches, syncs) sets the pace."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.inference_mode():
        backend._prefill_inputs(prepared.inputs)
        sync(device)
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(runs):
                backend._prefill_inputs(prepared.inputs)
            sync(device)
            wall = (time.perf_counter() - start) / runs
    # kernels only: an operator's row carries its kernels' time too, and counting both doubles the total (the
    # first committed profile, profile_ttft-h100-qwen2.5-vl-7b-full-vision-2026-11-26.json, did)
    by_name, count = kernel_us_by_name(prof, cuda=True) if device.startswith("cuda") else ({}, 0)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:20]
    host_ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {"wall_ms_per_pass": wall * 1000,
            "kernel_ms_per_pass": sum(by_name.values()) / 1000 / runs,
            "kernels_per_pass": count / runs,
            "top_kernels_ms_per_pass": {name[:90]: round(spent / 1000 / runs, 3) for name, spent in top},
            "top_host_ops_ms_per_pass": {e.key[:90]: round(e.self_cpu_time_total / 1000 / runs, 3) for e in host_ops}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="qwen2.5-vl-3b", choices=[*SIZES, *TEXT_SIZES])
    parser.add_argument("--vision", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--checkpoint", help="build the checkpoint here, or reuse the one built here before")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    photo = menu_photo()
    request = menu_request(photo)
    conversation = to_conversation(Request(**request))
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = benchmark_checkpoint(Path(args.checkpoint or Path(tmp) / "ckpt"), args.size,
                                       SIZES.get(args.size) or args.size, dtype,
                                       args.vision)
        print(f"checkpoint ready at {time.perf_counter() - begin:.0f} s", flush=True)
        with optascan.load(path, device=args.device, engine="fast") as fast:
            backend = fast.backend
            print(f"loaded at {time.perf_counter() - begin:.0f} s", flush=True)
            warmup = {"warmup_s": backend.warmup_s, "warmup_parts": backend.warmup_parts}
            fast.generate(**request, max_tokens=2)  # warm
            passes = [stages(backend, conversation, photo, args.device) for _ in range(args.runs)]
            image = prepare_image(photo, tier="quality", limits=backend.image_limits)
            kernels = vision_kernels(backend, backend.prepare(conversation, [image.image]), args.runs, args.device)
            ends = {}
            for _ in range(args.runs):  # the engine's own measure, hand-offs between threads included
                result = fast.generate(**request, max_tokens=1)
                ends.setdefault("engine_ttft", []).append(result.timings.ttft_s)
                ends.setdefault("engine_preprocess", []).append(result.timings.preprocess_s)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.runs):
                stages(backend, conversation, photo, "cpu")  # no synchronisation: the host's own time
            profiler.disable()
    stats = pstats.Stats(profiler)
    top = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:40]
    report = {
        "benchmark": "profile_ttft", "size": args.size, "vision": args.vision, **git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
        "versions": {"torch": torch.__version__, "optascan": optascan.__version__},
        "runs": args.runs, **warmup,
        "vision_and_merge_profile": kernels,
        "stage_ms": {name: statistics.median(p[name] for p in passes) * 1000 for name in passes[0]},
        "engine_ms": {name: statistics.median(values) * 1000 for name, values in ends.items()},
        "host_own_ms_per_pass": {f"{Path(file).name}:{line}:{func}": round(own / args.runs * 1000, 3)
                                 for (file, line, func), (_, _, own, _, _) in top},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("stage_ms", "engine_ms", "warmup_s", "warmup_parts",
                                                           "vision_and_merge_profile")}, indent=2))


if __name__ == "__main__":
    main()
