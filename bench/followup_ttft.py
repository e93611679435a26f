"""Time to first token of the Opta flow's follow-up turn: reusing the analyze turn's KV cache vs a cold prefill.

    python bench/followup_ttft.py [--runs 5] [--size small] [--device cpu] [--out bench/results/...json]
    python bench/followup_ttft.py --model demo      # the shipped demo model on its example photo

A Qwen2-VL-architecture checkpoint (random weights, language model of ``--size``, the real processor set to
Qwen2-VL's default pixel budget) gets the flow's own prompts: analyze (a 1024×768 photo + goal), then the
answer turn, which repeats the whole conversation, image included. Warm: the answer turn right after analyze,
as the flow runs it, so the backend takes the image and the first turn from its cache. Cold: the same turn
after the cache was dropped (what the original app's follow-up cost, and what a backend without reuse pays).
Runs alternate warm and cold; the report has both medians and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.inputs import menu_photo, qwen2_vl_checkpoint  # noqa: E402
from bench.provenance import ROOT, git_commit  # noqa: E402
from optascan.flow.prompts import DEPTHS, analyze_messages, answer_messages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None,
                        help="a real model instead (e.g. demo: the shipped demo, its example photo and goal)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    depth = DEPTHS["balanced"]
    with tempfile.TemporaryDirectory() as tmp, optascan.load(
            args.model or qwen2_vl_checkpoint(Path(tmp) / "qwen2-vl", args.size), device=args.device) as engine:
        if args.model:
            first_turn = analyze_messages("Which shape should I pick?", [ROOT / "examples" / "shapes.jpg"], depth)
        else:
            first_turn = analyze_messages("the most filling dish under $15", [menu_photo()], depth)
        ttft: dict[str, list[float]] = {"warm": [], "cold": []}
        shapes = {}
        for run in range(args.runs * 2):
            kind = ("warm", "cold")[run % 2]
            first = engine.generate(messages=first_turn, max_tokens=48, ignore_eos=True, image_tier="quality")
            if kind == "cold":
                engine.backend.forget_prefix()
            follow_up = answer_messages(first_turn, first.text, {"budget": 15}, depth)
            second = engine.generate(messages=follow_up, max_tokens=8, ignore_eos=True, image_tier="quality")
            ttft[kind].append(second.timings.ttft_s)
            shapes[kind] = {"prompt_tokens": second.usage.prompt_tokens, "image_tokens": second.usage.image_tokens,
                            "prefix_reused_tokens": second.metadata["prefix_reused_tokens"]}
        first_ttft = first.timings.ttft_s
    median = {k: statistics.median(v) for k, v in ttft.items()}
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "followup_ttft",
        "date": now.isoformat(timespec="seconds"),
        **git_commit(),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "optascan": optascan.__version__},
        "model": args.model or f"qwen2_vl random weights, text size {args.size!r}",
        "image": "examples/shapes.jpg" if args.model else [1024, 768], "runs": args.runs,
        "follow_up": shapes, "analyze_turn_ttft_s": first_ttft,
        "ttft_median_s": median, "ttft_all_s": ttft,
        "ratio_warm_over_cold": median["warm"] / median["cold"],
    }
    tag = f"{args.device.split(':')[0]}-{args.model}" if args.model else args.device.split(":")[0]
    out = Path(args.out or ROOT / f"bench/results/followup_ttft-{tag}-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"follow-up TTFT: warm {median['warm'] * 1000:.0f} ms, cold {median['cold'] * 1000:.0f} ms, ratio "
          f"{report['ratio_warm_over_cold']:.3f}; {shapes}; wrote {out}")


if __name__ == "__main__":
    main()
