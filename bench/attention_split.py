#!/usr/bin/env python3
"""How many cache slots each program of the fast engine's decode-attention kernel should read
(optascan/engine/backends/fast/attention.py ``split_for``): the kernel at every split, next to PyTorch's SDPA over
the same valid slots, for the benchmark models' head layouts — side by side, one run.

    PYTHONPATH=. python3 bench/attention_split.py --out $OUT/attention_split.json

One layer's attention for one new token (the step's cache write included) over a 2,048-slot cache bucket with
1,100 and 2,000 valid slots (a 1024x768 image and its reply), bf16, each timed as 10 calls in one CUDA graph.
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

from bench.matmul_ceiling import graph_time  # noqa: E402
from bench.provenance import git_commit  # noqa: E402
from optascan.engine.backends.fast.attention import decode_attention, split_for  # noqa: E402

LAYOUTS = {"qwen2.5-vl-3b": (16, 2, 128), "qwen2.5-vl-7b": (28, 4, 128), "llava-1.5-7b": (32, 32, 128)}


def time_layout(heads: int, kv: int, d: int, bucket: int, valid: int) -> dict:
    """µs per call of the kernel at each split and of SDPA over the valid slots, for one layer's head layout."""
    keys, values = (torch.randn(1, kv, bucket, d, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    query = torch.randn(1, heads, 1, d, dtype=torch.bfloat16, device="cuda")
    new_k, new_v = (torch.randn(1, kv, 1, d, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    index = torch.tensor([valid - 1], device="cuda")

    def kernel(split: int) -> None:
        for _ in range(10):
            decode_attention(query, keys, values, index, new_keys=new_k, new_values=new_v, split=split)

    def sdpa() -> None:
        for _ in range(10):
            F.scaled_dot_product_attention(query, keys[:, :, :valid], values[:, :, :valid], enable_gqa=True)

    row = {"default_split": split_for(kv, bucket), "kv_bytes": 2 * kv * valid * d * 2}
    for split in (16, 32, 64, 128):
        row[f"split_{split}_us"] = graph_time(lambda split=split: kernel(split)) * 1e5  # 10 calls: s → µs each
    row["sdpa_us"] = graph_time(sdpa) * 1e5
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {}
    for name, (heads, kv, d) in LAYOUTS.items():
        for valid in (1100, 2000):
            row = results[f"{name}/{valid}"] = time_layout(heads, kv, d, args.bucket, valid)
            print(name, valid, {key: round(value, 2) for key, value in row.items()}, flush=True)
    report = {"benchmark": "attention_split", **git_commit(), "bucket": args.bucket,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "versions": {"torch": torch.__version__}, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
