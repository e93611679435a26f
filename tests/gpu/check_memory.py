"""GPU tier for issue #6 (memory and residency), run through the device tool. Writes JSON, exits 1 on failure.

    PYTHONPATH=. python3 tests/gpu/check_memory.py --out "$OUT/memory_checks.json"
    python3 tests/gpu/check_memory.py --device cpu --size small     # a smoke run of the same logic here

Checks: the estimate against what CUDA really allocates (weights and KV cache, within 10 %); load/unload of a
full-size architecture (random weights) five times with device memory back to its baseline within 1 %; a
48 MP photo on a 3B-class Qwen2-VL architecture answered (downscaled) instead of crashing.
"""

from __future__ import annotations

import argparse
import functools
import gc
import tempfile
from pathlib import Path

import torch
from PIL import Image
from report import run_checks

import optascan
from optascan.testing.tiny import build_tiny_checkpoint

ROOT = Path(tempfile.mkdtemp(prefix="optascan-mem-"))
# Qwen2.5-VL-3B's language model shape (vocab from the tiny tokenizer, so ~3.1 B parameters)
QWEN_3B = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2)


_BUILT: dict[str, Path] = {}


def checkpoint(size) -> Path:
    """One random Qwen2-VL checkpoint per size, shared by the checks (a 3B one takes a minute to write)."""
    key = repr(size)
    if key not in _BUILT:
        _BUILT[key] = build_tiny_checkpoint("qwen2_vl", ROOT / f"ckpt-{len(_BUILT)}", text_size=size,
                                            dtype="bfloat16")
    return _BUILT[key]


def used(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return 0


def check_estimate_matches_allocation(record, device, size):
    path = checkpoint(size)
    dtype = "bfloat16" if device != "cpu" else "float32"
    est = optascan.estimate_memory(path, dtype=dtype, context_tokens=2048)
    before = used(device)
    with optascan.load(path, device=device) as engine:
        weights = used(device) - before
        record.update(estimate_weights=est.weights_bytes, measured_weights=weights or engine.info.weight_bytes)
        if device.startswith("cuda"):
            assert abs(weights - est.weights_bytes) <= 0.10 * est.weights_bytes, (weights, est.weights_bytes)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        result = engine.generate(prompt="Describe. " * 100, max_tokens=64, ignore_eos=True)
        tokens = result.usage.prompt_tokens + result.usage.completion_tokens
        record.update(prompt_tokens=result.usage.prompt_tokens, estimate_kv_per_token=est.kv_bytes_per_token,
                      estimate_kv_bytes=est.kv_bytes_per_token * tokens)
        if device.startswith("cuda"):  # KV cache + activations above the weights, for the record
            record["measured_peak_above_weights"] = torch.cuda.max_memory_allocated() - before - weights


def check_load_unload_returns_memory(record, device, size):
    path = checkpoint(size)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    baseline = torch.cuda.memory_reserved() if device.startswith("cuda") else 0
    after = []
    for _ in range(5):
        engine = optascan.load(path, device=device)
        engine.generate(prompt="x", images=[Image.new("RGB", (1024, 768))], max_tokens=16, ignore_eos=True)
        engine.close()
        del engine
        gc.collect()
        after.append(torch.cuda.memory_reserved() if device.startswith("cuda") else 0)
    record.update(baseline_reserved=baseline, reserved_after_each_unload=after)
    for value in after:
        assert abs(value - baseline) <= max(0.01 * max(baseline, 1), 2 * 2**20), (baseline, after)


def check_48mp_photo_on_3b_architecture(record, device, size):
    path = checkpoint(size)
    photo = Image.new("RGB", (8000, 6000), (120, 160, 200))
    with optascan.load(path, device=device) as engine:
        result = engine.generate(prompt="What is this?", images=[photo], max_tokens=8, ignore_eos=True,
                                 image_tier="quality")
        record.update(images=result.metadata["images"], usage=vars(result.usage),
                      downscaled=result.metadata.get("downscaled"))
        assert result.usage.completion_tokens == 8


CHECKS = [check_estimate_matches_allocation, check_load_unload_returns_memory, check_48mp_photo_on_3b_architecture]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="qwen2.5-vl-3b", help="'qwen2.5-vl-3b' on the GPU, 'small' for a smoke run")
    parser.add_argument("--out", default="tests/gpu/results/memory_checks.json")
    args = parser.parse_args()
    size = args.size if args.size != "qwen2.5-vl-3b" else QWEN_3B
    return run_checks([functools.partial(check, device=args.device, size=size) for check in CHECKS], args.out,
                      args.device)


if __name__ == "__main__":
    raise SystemExit(main())
