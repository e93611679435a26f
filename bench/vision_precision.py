#!/usr/bin/env python3
"""Does the fast engine's vision path lose precision? The model card's Qwen2.5-VL vision tower (32 blocks, random
weights) on the menu photo, in bf16, as transformers runs it and as the fast engine runs it (vision.py: packed
window attention, MLPs widened with zeros, one-kernel RMSNorms), each against the same tower in float32.

    PYTHONPATH=. python3 bench/vision_precision.py --out bench/results/vision_precision-cpu-<date>.json
    PYTHONPATH=. python3 bench/vision_precision.py --device cuda --size 1024x768 --out $OUT/vision_precision.json

Reported per path: the image features' relative error (Frobenius norm of the difference over the float32
features' norm) and the largest absolute error over the largest float32 value. On the CPU the packed attention
is the padded SDPA batch; on CUDA it is PyTorch's variable-length flash kernel.
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

from bench.inputs import benchmark_checkpoint, menu_photo  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast import vision  # noqa: E402


def features(path: Path, dtype: torch.dtype, device: str, photo, fast: bool) -> torch.Tensor:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()
    tower = model.model.visual
    if fast:
        assert vision.use_packed_attention(tower) and vision.pad_mlp_widths(tower) and vision.fuse_rms_norms(tower)
    inputs = processor.image_processor(images=[photo], return_tensors="pt")
    with torch.inference_mode():
        out = tower(inputs["pixel_values"].to(device, dtype), grid_thw=inputs["image_grid_thw"].to(device))
    merged = out.pooler_output if hasattr(out, "pooler_output") else out
    return merged.float().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="448x336", help="the photo's size, WxH (the benchmarks use 1024x768)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    photo = menu_photo().resize((width, height))
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = benchmark_checkpoint(Path(tmp) / "ckpt", "tiny", "tiny", "float32", "full")
        exact = features(path, torch.float32, args.device, photo, fast=False)
        report_paths, got = {}, {}
        for name, fast in (("transformers_bf16", False), ("fast_engine_bf16", True)):
            got[name] = features(path, torch.bfloat16, args.device, photo, fast)
            report_paths[name] = {
                "relative_error": float((got[name] - exact).norm() / exact.norm()),
                "max_abs_error_over_max": float((got[name] - exact).abs().max() / exact.abs().max())}
            print(name, report_paths[name], flush=True)
        # how far apart the two bf16 paths are (0: the same bits)
        between = float((got["fast_engine_bf16"] - got["transformers_bf16"]).norm() / exact.norm())
    report = {"benchmark": "vision_precision", **git_commit(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
              "versions": {"torch": torch.__version__}, "photo": args.size, "image_tokens": exact.shape[0],
              "paths": report_paths, "relative_difference_between_bf16_paths": between}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
