"""GPU tier for issue #9 (the fast engine), run through the device tool. Writes JSON, exits 1 on failure.

    PYTHONPATH=. python3 tests/gpu/check_fast.py --out "$OUT/fast_checks.json"
    python3 tests/gpu/check_fast.py --device cpu --out /tmp/fast_checks.json          # the same logic, here

Checks, on every family the fast engine supports (tiny checkpoints, bf16 on CUDA): greedy tokens equal to the
transformers engine for 64 tokens, or a first divergence that is a bf16 tie (the two tokens' logits within two
bf16 spacings in transformers' own recomputed logits, or within its own drift: optascan.testing.agreement); the
captured-graph loop stops at EOS without leaking the extra step (the demo model's answers); cancel within one
step; warm-up ≤ 15 s at load, with nothing compiled and our decode-attention, projection and elementwise kernels
(the CUDA default), which are also checked against SDPA, float32 matmuls and torch's eager code in bf16; the
Qwen2-VL-family packed vision attention against transformers' window loop; LLaVA's graphed vision tower (the CUDA
default) against the eager one. The JSON-schema part needs xgrammar (carry its wheels: see docs in README).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
from pathlib import Path

from PIL import Image
from report import run_checks

import optascan
from optascan.testing.tiny import build_tiny_checkpoint

ROOT = Path(tempfile.mkdtemp(prefix="optascan-fast-"))
FAMILIES = ("llava", "qwen2_vl", "idefics3", "llama_text")
PHOTO = Image.new("RGB", (640, 480), (200, 60, 30))


def check_greedy_matches_transformers(record, device):
    """64 greedy tokens per family; where they part, the step must be a bf16 tie (optascan.testing.agreement)."""
    from optascan.testing.agreement import first_divergence, greedy_ids

    for family in FAMILIES:
        path = build_tiny_checkpoint(family, ROOT / family, text_size="small")
        images = [] if family == "llama_text" else [PHOTO]
        request = dict(prompt="Describe the picture.", images=images)
        with optascan.load(path, device=device, engine="hf") as hf:
            prepared, expected = greedy_ids(hf, request, 64)
        with optascan.load(path, device=device, engine="fast") as fast:
            _, got = greedy_ids(fast, request, 64)
            record[f"{family}_warmup_s"] = fast.backend.warmup_s
            assert fast.backend.warmup_s <= 15
            record[f"{family}_agreement"] = first_divergence(fast, prepared, expected, got)
    parted = {f: record[f"{f}_agreement"] for f in FAMILIES if record[f"{f}_agreement"]["diverged"]}
    assert all(report["tie"] for report in parted.values()), parted


def check_demo_answers_stop_at_eos(record, device):
    from optascan.demo.eval import run_eval

    with optascan.load("demo", device=device, engine="fast") as fast:
        report = run_eval(lambda image, q: fast.generate(prompt=q, images=[image], max_tokens=8).text, scenes=30)
    record["accuracy"] = report["accuracy"]
    assert min(report["accuracy"].values()) >= 0.9


def check_cancel_within_one_step(record, device):
    path = build_tiny_checkpoint("qwen2_vl", ROOT / "cancel", text_size="small")
    with optascan.load(path, device=device, engine="fast") as fast:
        token = optascan.CancelToken()
        counts = []

        def on_event(event):
            counts.append(event.tokens)
            if event.tokens == 20:
                threading.Thread(target=token.cancel).start()

        result = fast.generate(prompt="go", max_tokens=5000, ignore_eos=True, cancel=token, on_event=on_event)
    record["tokens_at_cancel"] = result.usage.completion_tokens
    assert result.finish_reason.value == "cancelled" and result.usage.completion_tokens <= 23


def check_default_step_uses_our_kernels(record, device):
    """As the engine loads by default on CUDA: nothing compiled, our Triton decode attention, projections and
    elementwise kernels; load's warm-up (captures, the kernels' first builds) ≤ 15 s, transformers' tokens."""
    import torch.nn.functional as F

    from optascan.engine.backends.fast import elementwise
    from optascan.testing.agreement import first_divergence, greedy_ids

    path = build_tiny_checkpoint("qwen2_vl", ROOT / "qwen2_vl", text_size="small")
    request = dict(prompt="Describe the picture.", images=[PHOTO])
    with optascan.load(path, device=device, engine="hf") as hf:
        prepared, expected = greedy_ids(hf, request, 64)
    with optascan.load(path, device=device, engine="fast") as fast:
        record["compiled"] = fast.backend.decoder.compiled
        record["kernel_elementwise"] = fast.backend.decoder.ops is elementwise.TRITON
        record["kernel_attention"] = fast.backend.decoder.kernel_attention
        record["kernel_projections"] = fast.backend.decoder.linear is not F.linear
        record["warmup_s"] = fast.backend.warmup_s
        record["agreement"] = first_divergence(fast, prepared, expected, greedy_ids(fast, request, 64)[1])
    assert not record["compiled"] and record["kernel_elementwise"]
    assert record["kernel_attention"] and record["kernel_projections"]
    assert record["warmup_s"] <= 15
    assert not record["agreement"]["diverged"] or record["agreement"]["tie"], record["agreement"]


def check_decode_attention_kernel_in_bf16(record, device):
    """The Triton kernel against SDPA in float32 over the valid slots, in bf16 (the CPU tests run it through
    Triton's interpreter, whose bf16 dot product is unusable), for the benchmark models' head layouts."""
    import torch
    import torch.nn.functional as F

    from optascan.engine.backends.fast.attention import decode_attention

    torch.manual_seed(0)
    worst = 0.0
    for heads, kv in ((16, 2), (28, 4), (32, 32)):  # Qwen2.5-VL-3B, -7B, LLaVA-1.5-7B
        for slots, last in ((256, 0), (2048, 1100), (8192, 8191), (640, 511)):
            q = torch.randn(1, heads, 1, 128, device=device, dtype=torch.bfloat16)
            k, v = (torch.randn(1, kv, slots, 128, device=device, dtype=torch.bfloat16) for _ in range(2))
            out = decode_attention(q, k, v, torch.tensor([last], device=device)).float()
            ref = F.scaled_dot_product_attention(q.float(), k[:, :, :last + 1].float(), v[:, :, :last + 1].float(),
                                                 enable_gqa=True)
            worst = max(worst, (out - ref).abs().max().item())
            new_k, new_v = (torch.randn(1, kv, 1, 128, device=device, dtype=torch.bfloat16) for _ in range(2))
            out = decode_attention(q, k, v, torch.tensor([last], device=device), new_keys=new_k, new_values=new_v)
            assert torch.equal(k[:, :, last:last + 1], new_k) and torch.equal(v[:, :, last:last + 1], new_v)
            ref = F.scaled_dot_product_attention(q.float(), k[:, :, :last + 1].float(), v[:, :, :last + 1].float(),
                                                 enable_gqa=True)
            worst = max(worst, (out.float() - ref).abs().max().item())
    record["max_abs_error"] = worst
    assert worst < 2e-2  # bf16 output: ~3 significant digits of values of order 1


def check_elementwise_kernels_in_bf16(record, device):
    """Our norm, rotary-table, rotary and SiLU-gate kernels against torch's eager code in bf16 (the CPU tests run
    them in float32 and float16 through Triton's interpreter), on the benchmark models' sizes, by op: the largest
    difference relative to the output's scale, and the fraction of elements that differ (each kernel rounds where
    torch rounds, so they differ by a bf16 step where a float32 sum, cosine or quotient does); the rotary table
    also against float64."""
    import torch

    from optascan.engine.backends.fast import elementwise as ew

    torch.manual_seed(0)
    bf16 = torch.bfloat16
    by_op: dict[str, dict[str, float]] = {}

    def compare(op, ours, theirs):
        entry = by_op.setdefault(op, {"max_relative": 0.0, "differing": 0, "total": 0})
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype, op
            entry["max_relative"] = max(entry["max_relative"],
                                        ((a.float() - b.float()).abs().max() / b.float().abs().max()).item())
            entry["differing"] += int((a != b).sum())
            entry["total"] += b.numel()

    for hidden, heads, inner in ((2048, 18, 11008), (3584, 32, 18944), (4096, 64, 11008)):
        for rows in (1, 640):
            x, delta = (torch.randn(1, rows, hidden, device=device, dtype=bf16) for _ in range(2))
            weight = torch.randn(hidden, device=device, dtype=bf16)
            compare("add_rms_norm", ew.TRITON.add_rms_norm(x, delta, weight, 1e-6),
                    ew.TORCH.add_rms_norm(x, delta, weight, 1e-6))
            inv_freq = 1.0 / (1e6 ** (torch.arange(0, 128, 2, device=device).float() / 128))
            for sections in (None, (16, 24, 24)):
                streams = ew.rope_streams(sections, 64, device)
                positions = torch.randint(0, 8192, (3, rows) if sections else (rows,), device=device)
                cos, sin = ew.TORCH.rotary_table(positions, inv_freq, 1.0, streams, bf16)
                ours = ew.TRITON.rotary_table(positions, inv_freq, 1.0, streams, bf16)
                compare("rotary_table", ours, (cos, sin))
                # the same float32 angles (both compute them so), their cosine and sine in float64
                angle = positions.float()[..., None] * inv_freq
                angle = angle.gather(0, streams.long().view(1, 1, -1).expand(1, rows, -1))[0] if sections else angle
                exact = [torch.cat([f(angle.double())] * 2, dim=-1) for f in (torch.cos, torch.sin)]
                compare("rotary_table_vs_float64_ours", [t.double() for t in ours], exact)
                compare("rotary_table_vs_float64_torch", [cos.double(), sin.double()], exact)
                qkv = torch.randn(1, rows, (heads + 4) * 128, device=device, dtype=bf16)
                compare("rope", [ew.TRITON.rope(qkv, cos, sin, heads, 128)], [ew.TORCH.rope(qkv, cos, sin, heads, 128)])
            gate_up = torch.randn(1, rows, 2 * inner, device=device, dtype=bf16)
            compare("silu_mul", [ew.TRITON.silu_mul(gate_up)], [ew.TORCH.silu_mul(gate_up)])
    for entry in by_op.values():
        entry["differing_fraction"] = entry.pop("differing") / entry.pop("total")
    record["by_op"] = by_op
    # the norm's float32 sum runs in another order than torch's: a bf16 step off, rarely; the rest bit for bit
    assert by_op["add_rms_norm"]["differing_fraction"] < 1e-4 and by_op["add_rms_norm"]["max_relative"] < 1e-2, by_op
    assert all(by_op[op]["differing_fraction"] == 0 for op in ("rotary_table", "rope", "silu_mul")), by_op


def check_fp32_graphs_match_transformers_greedy_and_seeded(record, device):
    """In float32 ties are rare: the captured greedy graphs (buckets crossed) must give transformers' tokens, or
    part at a step whose two logits are within rounding; the sampled graphs' seeded text is reported."""
    from optascan.testing.agreement import first_divergence, greedy_ids

    path = build_tiny_checkpoint("qwen2_vl", ROOT / "qwen2_vl-fp32", text_size="small")
    request = dict(prompt="Describe the picture.", images=[PHOTO])
    seeded = dict(max_tokens=300, ignore_eos=True, temperature=0.8, top_p=0.95, top_k=50, seed=5)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40}, "n": {"type": "integer"}},
              "required": ["name", "n"], "additionalProperties": False}
    with optascan.load(path, device=device, engine="hf", dtype="float32") as hf:
        prepared, expected = greedy_ids(hf, request, 300)
        reference_text = hf.generate(**request, **seeded).text
        reference_json = hf.generate(**request, json_schema=schema, max_tokens=120).text
    with optascan.load(path, device=device, engine="fast", dtype="float32") as fast:
        record["greedy"] = first_divergence(fast, prepared, expected, greedy_ids(fast, request, 300)[1])
        text = fast.generate(**request, **seeded).text
        record["json_schema_equal"] = fast.generate(**request, json_schema=schema, max_tokens=120).text == \
            reference_json
    record["seeded_equal_chars"] = next((i for i, (x, y) in enumerate(zip(reference_text, text, strict=False))
                                         if x != y), min(len(reference_text), len(text)))
    record["seeded_equal"] = reference_text == text
    assert not record["greedy"]["diverged"] or record["greedy"]["tie"], record["greedy"]


def check_projection_kernel_in_bf16(record, device):
    """Our one-row projection kernel (the CUDA default) against a float32 matmul, in bf16, on the benchmark
    models' projection shapes, plain and gated (silu(gate) * up); and the engine with cuBLAS projections instead
    (OPTASCAN_FAST_GEMV=torch) still gives transformers' tokens or a tie."""
    import torch
    import torch.nn.functional as F

    from optascan.engine.backends.fast.gemv import gated_linear, linear
    from optascan.testing.agreement import first_divergence, greedy_ids

    torch.manual_seed(0)
    worst = 0.0
    for n, k in ((2560, 2048), (2048, 2048), (22016, 2048), (2048, 11008), (151936, 2048), (4608, 3584)):
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
        x = torch.randn(1, 1, k, device=device, dtype=torch.bfloat16)
        ref = F.linear(x.float(), w.float())
        worst = max(worst, ((linear(x, w).float() - ref).abs().max() / ref.abs().max()).item())
        gate, up = ref.chunk(2, dim=-1)
        ref = F.silu(gate) * up
        worst = max(worst, ((gated_linear(x, w).float() - ref).abs().max() / ref.abs().max()).item())
    record["max_relative_error"] = worst
    assert worst < 1e-2
    path = build_tiny_checkpoint("qwen2_vl", ROOT / "qwen2_vl", text_size="small")
    request = dict(prompt="Describe the picture.", images=[PHOTO])
    with optascan.load(path, device=device, engine="hf") as hf:
        prepared, expected = greedy_ids(hf, request, 64)
    os.environ["OPTASCAN_FAST_GEMV"] = "torch"
    try:
        with optascan.load(path, device=device, engine="fast") as fast:
            record["agreement"] = first_divergence(fast, prepared, expected, greedy_ids(fast, request, 64)[1])
    finally:
        os.environ.pop("OPTASCAN_FAST_GEMV")
    assert not record["agreement"]["diverged"] or record["agreement"]["tie"], record["agreement"]


def check_packed_vision_attention_in_bf16(record, device):
    """The Qwen2-VL-family vision attention in one call (vision.py: PyTorch's variable-length flash kernel on
    CUDA) against transformers' loop of one SDPA per window, in bf16, on the model card's tower shape (16 heads
    of 80) and a 1024x768 photo's ~70 windows of up to 64 patches plus one full-attention span; and a Qwen2.5-VL
    checkpoint's greedy tokens on the fast engine (packed) equal the transformers engine's (looped), or a tie."""
    import torch
    import torch.nn.functional as F

    from optascan.engine.backends.fast import vision
    from optascan.testing.agreement import first_divergence, greedy_ids

    torch.manual_seed(0)
    lengths = [64] * 60 + [48, 32, 16, 40, 56, 8, 24, 64, 36, 20]
    worst = {}
    for name, spans in (("windows", lengths), ("full", [sum(lengths)])):
        bounds = torch.tensor([0, *torch.tensor(spans).cumsum(0).tolist()], device=device, dtype=torch.int32)
        q, k, v = (torch.randn(1, 16, sum(spans), 80, device=device, dtype=torch.bfloat16) for _ in range(3))
        packed = vision.packed_attention(None, q, k, v, scaling=80 ** -0.5, cu_seq_lens_q=bounds,
                                         max_length_q=max(spans))[0][0]  # [total, heads, d]
        edges = bounds.tolist()
        looped = torch.cat([F.scaled_dot_product_attention(*(t[:, :, a:b].float() for t in (q, k, v)), scale=80 ** -0.5)
                            for a, b in zip(edges[:-1], edges[1:], strict=True)], dim=2)[0].transpose(0, 1)
        worst[name] = ((packed.float() - looped).abs().max() / looped.abs().max()).item()
    record["flash_kernel"] = vision.uses_flash_kernel(q)
    record["max_relative_error"] = worst
    assert max(worst.values()) < 2e-2
    path = build_tiny_checkpoint("qwen2_5_vl", ROOT / "qwen2_5_vl", text_size="small")
    request = dict(prompt="Describe the picture.", images=[PHOTO, Image.new("RGB", (300, 200), (20, 160, 30))])
    with optascan.load(path, device=device, engine="hf") as hf:
        prepared, expected = greedy_ids(hf, request, 64)
    with optascan.load(path, device=device, engine="fast") as fast:
        record["packed"] = fast.backend.packed_vision
        record["agreement"] = first_divergence(fast, prepared, expected, greedy_ids(fast, request, 64)[1])
    assert record["packed"]
    assert not record["agreement"]["diverged"] or record["agreement"]["tie"], record["agreement"]


def check_llava_vision_graph(record, device):
    """LLaVA's vision tower captured as a CUDA graph at load (the CUDA default) and replayed per request: two
    different photos give the same greedy tokens as the eager tower (OPTASCAN_FAST_VISION_GRAPH=0)."""
    from optascan.testing.agreement import greedy_ids

    path = build_tiny_checkpoint("llava", ROOT / "llava", text_size="small")
    photos = [PHOTO, Image.effect_noise((300, 200), 60).convert("RGB")]
    os.environ["OPTASCAN_FAST_VISION_GRAPH"] = "0"
    try:
        with optascan.load(path, device=device, engine="fast") as fast:
            assert fast.backend.vision_graph is None
            expected = [greedy_ids(fast, dict(prompt="Describe the picture.", images=[p]), 32)[1] for p in photos]
    finally:
        os.environ.pop("OPTASCAN_FAST_VISION_GRAPH")
    with optascan.load(path, device=device, engine="fast") as fast:
        graphed = fast.backend.vision_graph
        record["graphs"] = len(graphed.graphs) if graphed else 0
        record["warmup_parts"] = fast.backend.warmup_parts
        got = [greedy_ids(fast, dict(prompt="Describe the picture.", images=[p]), 32)[1] for p in photos]
        record["graphs_after"] = len(graphed.graphs) if graphed else 0
    record["equal"] = [a == b for a, b in zip(got, expected, strict=True)]
    assert all(record["equal"]) and expected[0] != expected[1]
    assert not device.startswith("cuda") or record["graphs"] == record["graphs_after"] == 1


CHECKS = [check_greedy_matches_transformers, check_fp32_graphs_match_transformers_greedy_and_seeded,
          check_demo_answers_stop_at_eos, check_cancel_within_one_step,
          check_default_step_uses_our_kernels, check_elementwise_kernels_in_bf16, check_decode_attention_kernel_in_bf16,
          check_projection_kernel_in_bf16, check_packed_vision_attention_in_bf16, check_llava_vision_graph]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="tests/gpu/results/fast_checks.json")
    parser.add_argument("--only", default="", help="run the checks whose names contain this text")
    args = parser.parse_args()
    chosen = [check for check in CHECKS if args.only in check.__name__]
    return run_checks([functools.partial(check, device=args.device) for check in chosen], args.out, args.device)


if __name__ == "__main__":
    raise SystemExit(main())
