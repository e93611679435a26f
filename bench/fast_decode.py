#!/usr/bin/env python3
"""Batch-1 decode speed: transformers' generate (dynamic cache), transformers with a static cache + compile, and
optascan's fast engine, on the same checkpoint and inputs (issue #9).

    PYTHONPATH=. python3 bench/fast_decode.py --device cuda --size qwen2.5-vl-3b      # through the device tool
    python bench/fast_decode.py --device cpu --size small --new-tokens 32              # a smoke run here

A checkpoint with random weights and the language model of ``--size``: Qwen2-VL architecture for Qwen2.5-VL-3B's
and -7B's shapes (the Qwen2.5-VL language model is this architecture), LLaVA with LLaVA-1.5-7B's Llama decoder
(the vision towers are tiny, the image grids the real ones; ``--vision full``: the model cards' towers, on the
Qwen2.5-VL architecture for the Qwen sizes); one 1024×768 image + a short prompt, greedy,
``--new-tokens`` tokens with EOS ignored. Paths: transformers' generate, transformers with a static cache +
torch.compile, and the fast engine (``--variants``: as it loads, with its step uncompiled or SDPA attention, and
with the experimental Triton projections).
Per path: TTFT (one-token generation), decode tok/s, the fraction of the bandwidth ceiling (HBM bandwidth ÷
language-model weight bytes; 3.35 TB/s on an H100 SXM, 4.8 on an H200), peak memory, warm-up time. Random weights
make greedy tokens arbitrary, so the report also says whether the fast engine's tokens equal transformers' and,
where they part, whether that step is a bf16 tie (``greedy_agreement``; for the default variant also against the
checkpoint reloaded in float32).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.inputs import benchmark_checkpoint, menu_request  # noqa: E402
from bench.provenance import ROOT, git_commit  # noqa: E402
from optascan.testing.agreement import against_float32, first_divergence, greedy_ids  # noqa: E402
from optascan.testing.tiny import TEXT_SIZES  # noqa: E402

SIZES = {  # language-model shapes from the public model cards, vocabulary (head and embeddings) included: the
    # tokenizer stays the tiny one, so ids past its ~600 tokens decode to nothing useful, as random weights do
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, vocab_size=152064),
    # LLaVA-1.5-7B: a Llama-2-7B (Vicuna) decoder, multi-head attention
    "llava-1.5-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32064),
}
H100_BANDWIDTH = 3.35e12
BANDWIDTH = {"H100": H100_BANDWIDTH, "H200": 4.8e12}  # HBM bytes/s of the SXM parts, from NVIDIA's data sheets


def bandwidth() -> float:
    """The HBM bandwidth of this GPU (the ceiling's numerator): the device tool lends H100s and H200s."""
    if not torch.cuda.is_available():
        return H100_BANDWIDTH
    name = torch.cuda.get_device_name(0)
    return next((value for part, value in BANDWIDTH.items() if part in name), H100_BANDWIDTH)
# the fast engine as it loads by default (on CUDA: our Triton decode attention, projections and elementwise
# kernels, nothing compiled; Qwen2-VL vision attention packed, LLaVA's vision tower graphed, prefill graphs), and
# with one of them switched off (fast_inductor: torch.compile's kernels for the elementwise work), to show what each
# is worth
VARIANTS = {"fast": {}, "fast_cublas_projections": {"OPTASCAN_FAST_GEMV": "torch"},
            "fast_sdpa_attention": {"OPTASCAN_FAST_ATTENTION": "sdpa"},
            "fast_uncompiled": {"OPTASCAN_FAST_COMPILE": "0", "OPTASCAN_FAST_ELEMENTWISE": "torch"},
            "fast_inductor": {"OPTASCAN_FAST_COMPILE": "1"},  # inductor's elementwise kernels, not ours
            "fast_looped_vision": {"OPTASCAN_FAST_VISION": "loop"},
            "fast_eager_vision": {"OPTASCAN_FAST_VISION_GRAPH": "0"},
            "fast_eager_prefill": {"OPTASCAN_FAST_PREFILL_GRAPHS": "0"}}
SWITCHES = ("OPTASCAN_FAST_COMPILE", "OPTASCAN_FAST_ELEMENTWISE", "OPTASCAN_FAST_ATTENTION", "OPTASCAN_FAST_GEMV",
            "OPTASCAN_FAST_VISION", "OPTASCAN_FAST_VISION_GRAPH", "OPTASCAN_FAST_PREFILL_GRAPHS")


def use_variant(name: str) -> None:
    """Set the environment the next fast-engine load reads to ``VARIANTS[name]`` (the other switches unset)."""
    for key in SWITCHES:
        os.environ.pop(key, None)
    os.environ.update(VARIANTS[name])


def weight_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the modules' parameters, a tensor shared by two (tied embeddings and head) counted once."""
    unique = {p.data_ptr(): p.numel() * p.element_size() for m in modules for p in m.parameters()}
    return sum(unique.values())


def peak_memory(device: str) -> dict:
    """The CUDA allocator's peak since the last reset (then reset for the next path): {} off CUDA."""
    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    return {"peak_memory_bytes": peak}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_engine(engine, request: dict, new_tokens: int, runs: int, device: str, ttft_runs: int) -> dict:
    """Time to first token over ``ttft_runs`` one-token requests (cheap, so many: transformers' own varies with
    the host, and its median is the number a user sees), then ``runs`` full requests for the decode rate."""
    # every run is cold: the HF backend would otherwise reuse the identical prompt's KV cache (issue #7)
    cold = engine.backend.forget_prefix
    ttft, preprocess, total, texts = [], [], [], set()
    engine.generate(**request, max_tokens=4, ignore_eos=True)  # warm
    for _ in range(ttft_runs):
        cold()
        sync(device)
        start = time.perf_counter()
        first = engine.generate(**request, max_tokens=1, ignore_eos=True)
        sync(device)
        ttft.append(time.perf_counter() - start)
        preprocess.append(first.timings.preprocess_s)
    for _ in range(runs):
        cold()
        start = time.perf_counter()
        result = engine.generate(**request, max_tokens=new_tokens, ignore_eos=True)
        sync(device)
        total.append(time.perf_counter() - start)
        texts.add(result.text)
    t, w = statistics.median(ttft), statistics.median(total)
    cold()
    return {"ttft_ms": t * 1000, "ttft_ms_runs": [round(x * 1000, 2) for x in ttft],
            "preprocess_ms": statistics.median(preprocess) * 1000, "total_s": w,
            "decode_tok_s": (new_tokens - 1) / max(w - t, 1e-9), "tokens": result.text, "runs_agree": len(texts) == 1}


def prefill_parts(engine, prepared, runs: int, device: str) -> dict:
    """The fast engine's time to first token past preprocessing, in its two parts: the vision tower and the
    merge of its features into the prompt (transformers' code, up to the language model), then our decoder's
    prefill (its CUDA graph where it has one)."""
    backend, vision, decoder = engine.backend, [], []
    with torch.inference_mode():
        for _ in range(runs + 1):  # the first warms
            sync(device)
            start = time.perf_counter()
            embeds, positions = backend._prefill_inputs(prepared.inputs)
            sync(device)
            middle = time.perf_counter()
            graphs = backend.prefill_graphs  # as FastBackend.prefill runs it: its graph, or eagerly
            if graphs is None or graphs.run(embeds, positions) is None:
                backend.decoder(embeds, 0, *backend.decoder.rotary(positions))
            sync(device)
            vision.append(middle - start)
            decoder.append(time.perf_counter() - middle)
    return {"vision_and_merge_ms": statistics.median(vision[1:]) * 1000,
            "decoder_prefill_ms": statistics.median(decoder[1:]) * 1000}


def timed_hf_static(path: Path, inputs: dict, eos: list[int], new_tokens: int, runs: int, device: str,
                    dtype: str) -> dict:
    """transformers' own fast path: static cache + torch.compile (compiles on first use), on the model as
    transformers loads it: optascan's stage hooks count calls in an attribute, and torch.compile guards on
    such integers and recompiles until its limit (seen in the first GPU run: 18 tok/s instead of ~160)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()

    def run(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           cache_implementation="static", compile_config=None, eos_token_id=eos,
                           pad_token_id=eos[0] if eos else 0)
        sync(device)
        return time.perf_counter() - start

    start = time.perf_counter()
    run(new_tokens)  # the first run compiles
    warmup = time.perf_counter() - start
    ttft = statistics.median(run(1) for _ in range(runs))
    total = statistics.median(run(new_tokens) for _ in range(runs))
    peak = peak_memory(device)  # its load, compile and runs (the caller reset the peak before)
    # torch.compile's caches hold the model: without a reset its weights stay allocated and count in the next
    # path's peak memory (the first H200 results' fast-engine peaks include one such copy)
    model = None
    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"ttft_ms": ttft * 1000, "total_s": total, "decode_tok_s": (new_tokens - 1) / max(total - ttft, 1e-9),
            "warmup_s": warmup, **peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="qwen2.5-vl-3b", choices=[*SIZES, *TEXT_SIZES])
    parser.add_argument("--family", choices=["qwen2_vl", "llava"], default="qwen2_vl",
                        help="architecture for the small test sizes (the named sizes imply theirs)")
    parser.add_argument("--vision", choices=["tiny", "full"], default="tiny",
                        help="the vision tower: tiny (the image grids are the real ones), or the model card's")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3, help="full requests per path (the decode rate)")
    parser.add_argument("--ttft-runs", type=int, default=10, help="one-token requests per path (time to first token)")
    parser.add_argument("--skip-static", action="store_true", help="skip transformers' static cache + compile")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"fast-engine variants to run, comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--checkpoint", help="build the checkpoint here, or reuse the one built here before")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    request = menu_request()
    report_paths: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.checkpoint or Path(tmp) / "ckpt")
        path, family = benchmark_checkpoint(where, "llava" if args.family == "llava" else args.size,
                                            SIZES.get(args.size) or args.size, dtype, args.vision)
        with optascan.load(path, device=args.device, engine="hf") as hf:
            lm_bytes = weight_bytes(hf.backend.language_model, hf.backend.model.lm_head)
            report_paths["hf_generate"] = timed_engine(hf, request, args.new_tokens, args.runs, args.device,
                                                       args.ttft_runs)
            report_paths["hf_generate"].update(peak_memory(args.device))
            prepared, reference_ids = greedy_ids(hf, request, args.new_tokens)
            inputs, eos = prepared.inputs, sorted(hf.backend.eos_token_ids)
        if not args.skip_static:
            try:
                report_paths["hf_static_compile"] = timed_hf_static(path, inputs, eos, args.new_tokens, args.runs,
                                                                    args.device, dtype)
            except Exception as err:  # noqa: BLE001 - recorded, not fatal: the other paths still count
                report_paths["hf_static_compile"] = {"error": f"{type(err).__name__}: {err}"[:500]}
        agreement = {}
        for name in args.variants.split(","):
            use_variant(name)
            gc.collect()  # the previous variant's engine: its peak must not count in this one's
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            peak_memory(args.device)
            start = time.perf_counter()
            with optascan.load(path, device=args.device, engine="fast") as fast:
                load_s = time.perf_counter() - start
                # what stays allocated once loaded (weights, KV cache, graph pools); the peak adds what the load
                # and warm-up held only for a while
                resident = {"resident_after_load_bytes": torch.cuda.memory_allocated()} if args.device.startswith(
                    "cuda") else {}
                decoder = fast.backend.decoder
                resident["kv_cache_bytes"] = decoder.k_cache.nbytes + decoder.v_cache.nbytes
                report_paths[name] = timed_engine(fast, request, args.new_tokens, args.runs, args.device,
                                                  args.ttft_runs)
                report_paths[name].update(load_s=load_s, warmup_s=fast.backend.warmup_s, **resident,
                                          warmup_parts=fast.backend.warmup_parts,
                                          **prefill_parts(fast, prepared, args.runs, args.device))
                report_paths[name].update(peak_memory(args.device))
                # the fast backend's transformers model holds the same weights: it recomputes reference logits
                ours = greedy_ids(fast, request, args.new_tokens)[1]
                agreement[name] = first_divergence(fast, prepared, reference_ids, ours)
                if name == "fast" and agreement[name]["diverged"]:  # what float32 says about that step
                    step = agreement[name]["equal_tokens"]
                    agreement[name]["float32"] = against_float32(fast, str(path), prepared, reference_ids[:step],
                                                                 (reference_ids[step], ours[step]))
    ceiling = bandwidth() / lm_bytes if args.device.startswith("cuda") else None
    for values in report_paths.values():
        if ceiling and "decode_tok_s" in values:
            values["fraction_of_ceiling"] = values["decode_tok_s"] / ceiling
    reference, ours = report_paths["hf_generate"].pop("tokens"), report_paths["fast"].pop("tokens")
    for values in report_paths.values():
        values.pop("tokens", None)
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "fast_decode", "date": now.isoformat(timespec="seconds"), **git_commit(),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "optascan": optascan.__version__},
        "size": args.size, "family": family, "vision": args.vision, "dtype": dtype,
        "new_tokens": args.new_tokens, "runs": args.runs, "ttft_runs": args.ttft_runs,
        "language_model_bytes": lm_bytes, "bandwidth_bytes_s": bandwidth() if ceiling else None,
        "ceiling_tok_s": ceiling, "paths": report_paths,
        "text_equal": reference == ours, "greedy_agreement": agreement,
        "ttft_ratio_fast_over_hf": report_paths["fast"]["ttft_ms"] / report_paths["hf_generate"]["ttft_ms"],
        # the cautious reading: our median against transformers' fastest run
        "ttft_ratio_fast_over_hf_fastest": report_paths["fast"]["ttft_ms"]
        / min(report_paths["hf_generate"]["ttft_ms_runs"]),
    }
    device_tag = next((part.lower() for part in BANDWIDTH if part in report["device"]), args.device.split(":")[0])
    out = Path(args.out or ROOT / f"bench/results/fast_decode-{device_tag}-{args.size}-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
