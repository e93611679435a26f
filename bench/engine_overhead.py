#!/usr/bin/env python3
"""Engine overhead: optascan's engine vs plain ``model.generate`` on the same model object and inputs.

The engine path is ``optascan.load(dir).generate(Request(...))``: worker thread, cancel hooks and stopping
criterion, logits adapter, streamer, incremental detokenizer, stop strings, one Event per token through a
queue. The baseline is what a plain transformers user writes -- chat template + processor, then
``model.generate`` -- on exactly the objects the engine's backend holds (``engine.backend.model`` and its
processor/tokenizer), with the engine's forward pre-hooks detached while it runs. Both are greedy and make
exactly ``--max-tokens`` tokens (engine: ``ignore_eos``; baseline: ``min_new_tokens``), timed the same way:

    TTFT  = wall time of a 1-token generation (preprocessing included, on both sides)
    total = wall time of a max-tokens generation
    decode tok/s = (max_tokens - 1) / (total - TTFT)

Baseline and engine runs alternate (b1 bN e1 eN, ...) after a warm-up of each; medians are reported, plus
the engine's own ``result.timings``. The issue's target: engine decode tok/s >= 95 % of the baseline's.

    PYTHONPATH=. python3 bench/engine_overhead.py --device cuda --size qwen2-vl-2b --family qwen2_vl
    python bench/engine_overhead.py --device cpu --size small --runs 5

Needs only torch, transformers (+ tokenizers), Pillow and numpy, and torchvision for qwen2_vl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

from provenance import git_commit

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPT = "Describe the picture in one sentence, please."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from optascan.testing.tiny import FAMILIES, TEXT_SIZES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="llava", choices=FAMILIES)
    p.add_argument("--size", default="small", choices=tuple(TEXT_SIZES), help="language-model size preset")
    p.add_argument("--model", default=None, help="use this checkpoint directory instead of building one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, help="float32/bfloat16/float16 (default: the engine's: bf16 on GPU)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--image-size", default="448x336", help="WIDTHxHEIGHT of the synthetic input image")
    p.add_argument("--seed", type=int, default=0, help="checkpoint seed")
    p.add_argument("--out", default=None,
                   help="JSON path (default bench/results/engine_overhead-<device-kind>-<date>.json)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.max_tokens < 2:
        p.error("--runs must be >= 1 and --max-tokens >= 2")
    if not re.fullmatch(r"\d+x\d+", args.image_size):
        p.error("--image-size must look like 448x336")
    return args


def make_image(size: str):
    """A deterministic RGB gradient with some structure (so the vision tower sees non-constant input)."""
    import numpy as np
    from PIL import Image

    width, height = (int(v) for v in size.split("x"))
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), ((x // 16 + y // 16) % 2) * 255],
                   axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


@contextmanager
def without_engine_hooks(model):
    """Detach the forward pre-hooks HFBackend installed (cancel checks) so the baseline is plain HF."""
    saved = []
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if "HFBackend" in getattr(hook, "__qualname__", ""):
                saved.append((module, key, hook))
                del module._forward_pre_hooks[key]
    try:
        yield len(saved)
    finally:
        for module, key, hook in saved:
            module._forward_pre_hooks[key] = hook


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})"


def summarize(runs: list[dict], max_tokens: int) -> dict:
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0] if runs[0][key] is not None}
    med["decode_tok_s_from_medians"] = (max_tokens - 1) / (med["total_s"] - med["ttft_s"])
    return {**med, "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import GenerationConfig

    import optascan
    from optascan import Request
    from optascan.engine.conversation import to_conversation
    from optascan.images.prepare import prepare_image
    from optascan.testing.tiny import build_tiny_checkpoint

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(torch.device(device))) if on_cuda else (lambda: None)

    tmp = None
    build_s = None
    if args.model:
        model_dir = pathlib.Path(args.model)
    else:  # bf16 files for GPU runs: half the bytes to write and read
        tmp = tempfile.mkdtemp(prefix="optascan-bench-")
        build_dtype = args.dtype or ("bfloat16" if on_cuda else None)
        t0 = time.perf_counter()
        model_dir = build_tiny_checkpoint(args.family, pathlib.Path(tmp) / args.family, seed=args.seed,
                                          text_size=args.size, dtype=build_dtype)
        build_s = time.perf_counter() - t0
        print(f"built {args.family}/{args.size} ({build_dtype or 'float32'}) in {build_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    engine = optascan.load(model_dir, device=device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    backend = engine.backend
    model, processor, tokenizer = backend.model, backend.processor, backend.tokenizer
    image = make_image(args.image_size) if backend.supports_images else None
    images = [image] if image is not None else []
    # The engine sizes images to its tier and the processor's limits before the processor; the baseline gets
    # that same prepared image (made once, outside its timings), so both feed the model identical tensors.
    baseline_images = [prepare_image(i, limits=backend.image_limits).image for i in images]
    messages = [{"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": PROMPT}]}]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(backend.eos_token_ids), 0)

    def plain_inputs() -> dict:
        """What a transformers user writes: chat template, processor, tensors to the model's device/dtype."""
        if processor is not None:
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            enc = processor(text=[text], images=baseline_images or None, return_tensors="pt",
                            add_special_tokens=False)
        else:
            text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                                 tokenize=False)
            enc = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        return {k: v.to(model.device, dtype=model.dtype) if torch.is_floating_point(v) else v.to(model.device)
                for k, v in enc.items()}

    # The baseline's inputs must be exactly what the engine feeds the model.
    request = Request(prompt=PROMPT, images=images, max_tokens=1)
    prepared = backend.prepare(to_conversation(request), baseline_images)
    mine = plain_inputs()
    assert set(mine) == set(prepared.inputs), (sorted(mine), sorted(prepared.inputs))
    for key, value in mine.items():
        assert torch.equal(value, prepared.inputs[key]), f"baseline input {key!r} differs from the engine's"
    prompt_len = int(mine["input_ids"].shape[1])
    with without_engine_hooks(model) as hooks_detached:  # 2 for a VLM (vision tower, language model)
        pass

    def baseline(n: int) -> tuple[float, dict]:
        config = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                                  pad_token_id=pad_id)
        sync()
        t0 = time.perf_counter()
        inputs = plain_inputs()
        with without_engine_hooks(model), torch.inference_mode():
            out = model.generate(**inputs, generation_config=config)
        sync()
        wall = time.perf_counter() - t0
        ids = out[0, prompt_len:].tolist()
        assert len(ids) == n, f"baseline made {len(ids)} tokens, not {n}"
        return wall, {"text": tokenizer.decode(ids, skip_special_tokens=True)}

    def engine_run(n: int) -> tuple[float, dict]:
        req = Request(prompt=PROMPT, images=images, max_tokens=n, temperature=0.0, ignore_eos=True, seed=0)
        engine.backend.forget_prefix()  # cold, like the baseline: no KV cache kept from the identical last run
        sync()
        t0 = time.perf_counter()
        result = engine.generate(req)
        sync()
        wall = time.perf_counter() - t0
        assert result.usage.completion_tokens == n, f"engine made {result.usage.completion_tokens} tokens, not {n}"
        return wall, {"text": result.text, "timings": result.timings}

    n = args.max_tokens
    print(f"device {device_name(device)}; {args.runs} runs of 1 and {n} tokens each, interleaved", flush=True)
    for fn in (baseline, engine_run):  # warm-up: allocator, kernels/graphs, tokenizer caches
        fn(n)
        fn(1)
    base_runs, eng_runs = [], []
    texts = {}
    for i in range(args.runs):
        # b1 bN e1 eN: each 1-token run follows the other path's long run and each long run its own short
        # one, so neither path inherits a position effect (on CPU, the first call after a long generation
        # is ~15 ms slower, e.g. from the allocator handing freed KV-cache memory back).
        b_ttft, _ = baseline(1)
        b_total, b = baseline(n)
        e_ttft, e1 = engine_run(1)
        e_total, e = engine_run(n)
        texts = {"baseline": b["text"], "engine": e["text"]}
        base_runs.append({"ttft_s": b_ttft, "total_s": b_total, "decode_tok_s": (n - 1) / (b_total - b_ttft)})
        t = e["timings"]
        eng_runs.append({"ttft_s": e_ttft, "total_s": e_total, "decode_tok_s": (n - 1) / (e_total - e_ttft),
                         "reported_ttft_s": t.ttft_s, "reported_decode_tok_s": t.decode_tokens_per_s,
                         "reported_preprocess_s": t.preprocess_s, "reported_ttft_s_1tok": e1["timings"].ttft_s})
        print(f"  run {i + 1}: baseline {base_runs[-1]['decode_tok_s']:7.1f} tok/s ttft {b_ttft * 1e3:7.1f} ms | "
              f"engine {eng_runs[-1]['decode_tok_s']:7.1f} tok/s ttft {e_ttft * 1e3:7.1f} ms", flush=True)

    base, eng = summarize(base_runs, n), summarize(eng_runs, n)
    decode_ratio = eng["decode_tok_s"] / base["decode_tok_s"]
    params = sum(p.numel() for p in model.parameters())
    lm = getattr(getattr(model, "model", model), "language_model", None)
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "engine_overhead",
        "date": now.isoformat(timespec="seconds"),
        **git_commit(),
        "device": device_name(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "optascan": optascan.__version__,
                     "cuda": torch.version.cuda if on_cuda else None},
        "config": {**vars(args), "device_resolved": backend.device, "dtype_resolved": str(model.dtype),
                   "model_class": type(model).__name__, "params": params,
                   "language_model_params": sum(p.numel() for p in lm.parameters()) if lm is not None else None,
                   "prompt_tokens": prepared.prompt_tokens, "image_tokens": prepared.image_tokens,
                   "build_s": build_s, "load_s": load_s, "torch_threads": torch.get_num_threads(),
                   "baseline_engine_hooks_detached": hooks_detached},
        "baseline": base,
        "engine": eng,
        "ratio": {"decode_tok_s": decode_ratio, "ttft": eng["ttft_s"] / base["ttft_s"],
                  # each run pairs a baseline and an engine measurement taken seconds apart: the median of
                  # those ratios is less exposed to slow drifts of the machine than a ratio of medians
                  "decode_tok_s_pair_median": statistics.median(
                      e["decode_tok_s"] / b["decode_tok_s"] for b, e in zip(base_runs, eng_runs, strict=True))},
        "overhead_pct": (1 - decode_ratio) * 100,
        "same_text": texts["baseline"] == texts["engine"],
    }

    out = pathlib.Path(args.out) if args.out else default_out(device, now)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    engine.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)

    label = f"{args.family}/{args.size}" if not args.model else str(args.model)
    print(f"\n{label} on {report['device']}, {model.dtype}, {params / 1e6:.1f}M params, "
          f"{prepared.prompt_tokens} prompt tokens ({prepared.image_tokens} image), {n} new tokens, "
          f"median of {args.runs}")
    print(f"  decode tok/s  baseline {base['decode_tok_s']:8.1f}   engine {eng['decode_tok_s']:8.1f}   "
          f"ratio {decode_ratio:.3f}  (overhead {report['overhead_pct']:+.1f} %, target <= 5 %; "
          f"median of per-run ratios {report['ratio']['decode_tok_s_pair_median']:.3f})")
    print(f"  TTFT ms       baseline {base['ttft_s'] * 1e3:8.1f}   engine {eng['ttft_s'] * 1e3:8.1f}   "
          f"ratio {report['ratio']['ttft']:.3f}")
    print(f"  engine-reported: ttft {eng['reported_ttft_s'] * 1e3:.1f} ms, decode {eng['reported_decode_tok_s']:.1f} "
          f"tok/s; same text on both paths: {report['same_text']}")
    print(f"  wrote {out}")
    return report


def default_out(device: str, now: datetime.datetime) -> pathlib.Path:
    import torch

    kind = "cpu" if not device.startswith("cuda") else re.sub(
        r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")
    base = ROOT / "bench" / "results" / f"engine_overhead-{kind}-{now.date().isoformat()}"
    out, i = base.with_suffix(".json"), 2
    while out.exists():  # never overwrite an earlier run of the same day
        out, i = base.with_name(f"{base.name}-{i}.json"), i + 1
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from anywhere without installing
    main()
