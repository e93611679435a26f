"""The fast engine's Triton kernels — decode attention, the one-row projections (gemv), the elementwise work
(norm, rotary, SiLU gate) — run here through Triton's interpreter (TRITON_INTERPRET=1, in a child process: the
variable must be set before Triton is imported). bf16 is checked on the GPU (tests/gpu/check_fast.py): the
interpreter's bf16 dot product is wrong even for Triton's own example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

KERNEL_CASES = textwrap.dedent("""
    import json, torch
    import torch.nn.functional as F
    from optascan.engine.backends.fast.attention import available, decode_attention, split_for
    torch.manual_seed(0)
    results = []
    # (heads, kv_heads, head_dim, cache slots, new token's slot, dtype, slots per program): grouped and
    # multi-head attention, the first slot, the last slot, split edges (the default split's and given ones), a
    # cache length that is no multiple of a split
    s = split_for(2, 200)
    cases = [(16, 2, 128, 512, 300, torch.float32, None), (4, 4, 32, 256, 0, torch.float32, None),
             (8, 2, 64, 384, 383, torch.float16, None), (6, 2, 16, 200, s - 1, torch.float32, None),
             (6, 2, 16, 200, s, torch.float32, None), (28, 4, 128, 3 * 128 + 5, 3 * 128 + 1, torch.float16, 128),
             (6, 2, 16, 200, 32, torch.float32, 32), (6, 2, 16, 200, 63, torch.float32, 16)]
    for heads, kv, d, slots, last, dtype, split in cases:
        q = torch.randn(1, heads, 1, d, dtype=dtype)
        k, v = (torch.randn(1, kv, slots, d, dtype=dtype) for _ in range(2))
        k[:, :, last + 1:] = 1e4  # garbage after the new token must not count
        out = decode_attention(q, k, v, torch.tensor([last]), split=split)
        ref = F.scaled_dot_product_attention(q.float(), k[:, :, :last + 1].float(), v[:, :, :last + 1].float(),
                                             enable_gqa=True)
        # the fused cache write: the new key and value land in slot ``last`` and are attended to
        new_k, new_v = (torch.randn(1, kv, 1, d, dtype=dtype) for _ in range(2))
        written = decode_attention(q, k, v, torch.tensor([last]), new_keys=new_k, new_values=new_v, split=split)
        k_ref, v_ref = k[:, :, :last + 1].float().clone(), v[:, :, :last + 1].float().clone()
        k_ref[:, :, last:last + 1], v_ref[:, :, last:last + 1] = new_k.float(), new_v.float()
        ref_written = F.scaled_dot_product_attention(q.float(), k_ref, v_ref, enable_gqa=True)
        results.append({"case": [heads, kv, d, slots, last, str(dtype), split], "available": available(q),
                        "shape_ok": out.shape == q.shape and out.dtype == q.dtype,
                        "error": (out.float() - ref).abs().max().item(),
                        "written_error": (written.float() - ref_written).abs().max().item(),
                        "slot_written": bool(torch.equal(k[:, :, last:last + 1], new_k)
                                             and torch.equal(v[:, :, last:last + 1], new_v)),
                        "rest_untouched": bool((k[:, :, last + 1:] == 1e4).all())})
    print(json.dumps(results))
""")

GEMV_CASES = textwrap.dedent("""
    import json, torch
    import torch.nn.functional as F
    from optascan.engine.backends.fast.gemv import Tile, gated_linear, linear
    torch.manual_seed(0)
    results = []
    # (rows, columns, bias, dtype, tile): row and column counts that are no multiple of the blocks, a long K, a
    # wide N (each default tile rule once), then tiles that loop over K several times with a partial last row
    # block; the gated form (silu(gate) * up through a fused gate/up weight) by default and by a given tile
    for n, k, bias, dtype, tile in [(40, 64, False, torch.float32, None), (37, 1000, True, torch.float32, None),
                                    (8200, 48, False, torch.float16, None), (24, 1300, True, torch.float16, None),
                                    (37, 300, True, torch.float32, Tile(4, 64, 2)),
                                    (37, 300, False, torch.float32, Tile(2, 128, 4))]:
        w = torch.randn(n, k, dtype=dtype) * 0.05
        b = torch.randn(n, dtype=dtype) if bias else None
        x = torch.randn(1, 1, k, dtype=dtype)
        out = linear(x, w, b, tile)
        ref = F.linear(x.float(), w.float(), None if b is None else b.float())
        results.append({"case": [n, k, bias, str(dtype), tile], "shape_ok": out.shape == ref.shape
                        and out.dtype == dtype, "error": (out.float() - ref).abs().max().item()})
    for half, k, tile in [(37, 300, None), (37, 300, Tile(4, 64, 2)), (20, 2100, None)]:
        w, x = torch.randn(2 * half, k) * 0.05, torch.randn(1, 1, k)
        gate, up = F.linear(x, w).chunk(2, dim=-1)
        ref, out = F.silu(gate) * up, gated_linear(x, w, tile)
        results.append({"case": ["gated", half, k, tile], "shape_ok": out.shape == ref.shape,
                        "error": (out - ref).abs().max().item()})
    two_rows = torch.randn(2, 64)  # more than one row: F.linear's job
    results.append({"case": "two rows", "shape_ok": True,
                    "error": (linear(two_rows, torch.ones(8, 64)) - two_rows.sum(-1, keepdim=True)).abs().max().item()})
    print(json.dumps(results))
""")

ELEMENTWISE_CASES = textwrap.dedent("""
    import json, torch
    from optascan.engine.backends.fast import elementwise as ew
    torch.manual_seed(0)
    results = []

    def error(a, b):
        return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))

    # a hidden size that is no power of two; fp16 rounds as torch rounds, so it must match exactly too
    for dtype in (torch.float32, torch.float16):
        x, delta = torch.randn(1, 5, 96, dtype=dtype), torch.randn(1, 5, 96, dtype=dtype)
        weight = torch.randn(96, dtype=dtype)
        results.append({"case": ["add_rms_norm", str(dtype)], "error": error(
            ew.TRITON.add_rms_norm(x, delta, weight, 1e-6), ew.TORCH.add_rms_norm(x, delta, weight, 1e-6))})
        inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
        # plain RoPE; M-RoPE's three streams, also as an expanded view (a text prompt's: stride 0) and for one
        # token (a decode step's [1]); positions up to thousands of radians
        for sections, positions in [(None, torch.arange(5) * 997), ((2, 3, 3), torch.randint(0, 5000, (3, 5))),
                                    ((2, 3, 3), torch.arange(5).expand(3, 5)), ((2, 3, 3), torch.tensor([4321]))]:
            streams = ew.rope_streams(sections, 8, "cpu")
            ours = ew.TRITON.rotary_table(positions, inv_freq, 1.0, streams, dtype)
            theirs = ew.TORCH.rotary_table(positions, inv_freq, 1.0, streams, dtype)
            results.append({"case": ["rotary_table", str(sections), list(positions.shape), str(dtype)],
                            "error": error(ours, theirs), "shape_ok": ours[0].shape == theirs[0].shape})
        qkv = torch.randn(1, 5, 9 * 16, dtype=dtype)  # 6 rotated heads of 16 (a program's 4, then 2), 3 more
        cos, sin = ew.TORCH.rotary_table(torch.arange(5) * 31, inv_freq, 1.0, ew.rope_streams(None, 8, "cpu"), dtype)
        ours, theirs = ew.TRITON.rope(qkv, cos, sin, 6, 16), ew.TORCH.rope(qkv, cos, sin, 6, 16)
        results.append({"case": ["rope", str(dtype)], "error": error([ours], [theirs]),
                        "shape_ok": ours.shape == theirs.shape == (1, 6, 5, 16)})
        gate_up = torch.randn(1, 5, 2 * 1500, dtype=dtype)  # more than one block of columns
        results.append({"case": ["silu_mul", str(dtype)],
                        "error": error([ew.TRITON.silu_mul(gate_up)], [ew.TORCH.silu_mul(gate_up)])})
    print(json.dumps(results))
""")

ENGINE_CASE = textwrap.dedent("""
    import json, sys, torch
    import optascan
    from optascan.testing.agreement import greedy_ids
    from PIL import Image
    family, path = sys.argv[1], sys.argv[2]
    request = dict(prompt="What is in the picture?", images=[Image.new("RGB", (64, 48), (200, 30, 30))])
    with optascan.load(path, device="cpu", engine="hf") as hf:
        _, reference = greedy_ids(hf, request, 24)
    with optascan.load(path, device="cpu", engine="fast") as fast:
        decoder = fast.backend.decoder
        kernel_on = decoder.kernel_attention
        gemv_on = decoder.linear is not torch.nn.functional.linear
        from optascan.engine.backends.fast import elementwise
        elementwise_on = decoder.ops is elementwise.TRITON
        _, ours = greedy_ids(fast, request, 24)
        # one step's logits by the kernel and by SDPA, at the same cache contents
        args = (torch.tensor([[7]]), torch.tensor([40]), torch.tensor([45]))
        with torch.inference_mode():
            kernel = decoder.step(*args, 256)
            decoder.kernel_attention = False
            sdpa = decoder.step(*args, 256)
    print(json.dumps({"kernel_attention_on": kernel_on, "gemv_on": gemv_on, "elementwise_on": elementwise_on,
                      "equal": reference == ours,
                      "tokens": len(ours), "logits_error": (kernel - sdpa).abs().max().item()}))
""")


def _run(script: str, *args: str, **env_vars: str) -> object:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.getcwd(), **env_vars}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_kernel_equals_attention_over_the_valid_slots():
    for result in _run(KERNEL_CASES):
        assert result["available"] and result["shape_ok"], result
        tolerance = 2e-3 if "float16" in str(result["case"]) else 1e-5
        assert result["error"] < tolerance and result["written_error"] < tolerance, result
        assert result["slot_written"] and result["rest_untouched"], result


def test_the_gemv_kernel_equals_a_float32_matmul():
    for result in _run(GEMV_CASES):
        assert result["shape_ok"], result
        assert result["error"] < (2e-2 if "float16" in str(result["case"]) else 1e-4), result


def test_the_elementwise_kernels_equal_torchs_code():
    # float32 to a rounding step (the norm's sum runs in another order), float16 exactly: each product and sum
    # rounded as torch rounds it
    for result in _run(ELEMENTWISE_CASES):
        assert result.get("shape_ok", True), result
        assert result["error"] <= (1e-6 if "float32" in str(result["case"]) else 0.0), result


@pytest.mark.parametrize("kernels", ["", "triton"], ids=["torch-gemv-and-elementwise", "triton-gemv-and-elementwise"])
@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_the_fast_engine_with_the_kernels_gives_transformers_tokens(tiny_dir, family, kernels):
    result = _run(ENGINE_CASE, family, str(tiny_dir(family)), OPTASCAN_FAST_GEMV=kernels,
                  OPTASCAN_FAST_ELEMENTWISE=kernels)
    assert result["kernel_attention_on"] and result["gemv_on"] == (kernels == "triton"), result
    assert result["elementwise_on"] == (kernels == "triton"), result
    assert result["equal"] and result["tokens"] == 24, result
    assert result["logits_error"] < 1e-4, result
