"""The decoder's elementwise work, as torch code and as four Triton kernels (the fast engine's on CUDA): the residual
add with the RMS norm, the rotary table, rotary on queries and keys, and a prompt's SiLU gate.

Why kernels of our own: inductor fused the torch code into as few kernels, but compiling it was 8-13 s of a cold
load's warm-up on an H100 host, most of it Python (dynamo, AOTAutograd, inductor: bench/results/profile_warmup-*),
and issue #9 asks for at most 15 s; these four trace nothing, and a cold warm-up with them (their first builds
included) is 7.4-9.5 s on the same hosts (bench/results/fast_warmup-h100-*-at-{b056fe8,9b3d990,6116915}.json).
Each rounds as torch's eager code (transformers' own) rounds: every torch op's result is rounded to the tensor's
dtype, so in bf16 the kernels' results equal eager torch's but for the order of the norm's sum.

``TORCH`` and ``TRITON`` hold the same four functions. The decoder takes ``TRITON`` where ``enabled`` (CUDA), and
``TORCH`` elsewhere and when it compiles (OPTASCAN_FAST_COMPILE=1: torch.compile of the torch code, as before).
Triton's interpreter runs the kernels on CPU tensors for the tests (OPTASCAN_FAST_ELEMENTWISE=triton).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:
    triton = None

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ROPE_HEADS = 4  # heads per program of the rotary kernel
# no fused multiply-adds: compiled with them, the rotary kernel's products met the sum unrounded despite the
# explicit roundings between them (19 % of bf16 outputs a step off torch's on an H100; 0 % without)
_AS_TORCH_ROUNDS = {} if _INTERPRETED else {"enable_fp_fusion": False}


class Ops(NamedTuple):
    add_rms_norm: Callable  # (x, delta, weight, eps) -> (x + delta, its RMS norm times weight)
    rotary_table: Callable  # (positions [n] or M-RoPE's [3, n], inv_freq, scale, streams, dtype) -> cos, sin [n, d]
    rope: Callable  # (qkv [1, n, >= heads*d], cos, sin, heads, d) -> the first ``heads`` heads rotated [1, heads, n, d]
    silu_mul: Callable  # (gate_up [..., 2i]) -> silu(gate) * up [..., i]


def enabled(device: torch.device | str) -> bool:
    """Whether the decoder's elementwise work runs as our kernels on ``device``: on CUDA unless
    OPTASCAN_FAST_ELEMENTWISE=torch, elsewhere only if it is =triton (Triton's interpreter, for tests)."""
    choice = os.environ.get("OPTASCAN_FAST_ELEMENTWISE", "")
    if triton is None or choice == "torch":
        return False
    return choice == "triton" or torch.device(device).type == "cuda"


def rope_streams(sections: tuple[int, ...] | None, half: int, device: torch.device | str) -> torch.Tensor:
    """For each rotary frequency, the position stream it reads: Qwen2-VL's M-RoPE gives frequency section i to
    stream i % 3 (time, height, width); plain RoPE reads stream 0 only."""
    streams = [i % 3 for i, size in enumerate(sections) for _ in range(size)] if sections else [0] * half
    if len(streams) != half:
        raise ValueError(f"rotary sections {sections} do not cover {half} frequencies")
    return torch.tensor(streams, dtype=torch.int32, device=device)


# --- torch ------------------------------------------------------------------------------------------------
def _torch_add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = x + delta
    # as transformers computes it: the statistics in float32, the scale in the input dtype
    x32 = x.float()
    return x, weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _torch_rotary_table(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float, streams: torch.Tensor,
                        dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if positions.dim() == 1:
        positions = positions[None]
    freqs = positions[..., None].float() * inv_freq.float()  # [streams, seq, head_dim/2]
    if positions.shape[0] > 1:  # M-RoPE: each frequency from its stream's positions
        freqs = freqs.gather(0, streams.long().view(1, 1, -1).expand(1, freqs.shape[1], -1))
    table = torch.cat((freqs[0], freqs[0]), dim=-1)
    return (table.cos() * scale).to(dtype), (table.sin() * scale).to(dtype)


def _torch_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    x = qkv[..., :heads * head_dim].view(1, qkv.shape[1], heads, head_dim).transpose(1, 2)
    half = head_dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _torch_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


TORCH = Ops(_torch_add_rms_norm, _torch_rotary_table, _torch_rope, _torch_silu_mul)


# --- Triton -----------------------------------------------------------------------------------------------
def _usable(*tensors: torch.Tensor) -> bool:
    first = tensors[0]
    return (triton is not None and (first.is_cuda or _INTERPRETED)
            and all(t.dtype == first.dtype for t in tensors) and first.dtype in (torch.bfloat16, torch.float16,
                                                                                 torch.float32))


def _add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not _usable(x, delta, weight):
        return _torch_add_rms_norm(x, delta, weight, eps)
    x, delta = x.contiguous(), delta.contiguous()
    hidden = x.shape[-1]
    total, normed = torch.empty_like(x), torch.empty_like(x)
    block = triton.next_power_of_2(hidden)
    _add_rms_kernel[(x.numel() // hidden,)](x, delta, weight, total, normed, hidden, eps, BLOCK=block,
                                           num_warps=8 if block >= 4096 else 4, **_AS_TORCH_ROUNDS)
    return total, normed


def _rotary_table(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float, streams: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if not (triton is not None and (positions.is_cuda or _INTERPRETED)):
        return _torch_rotary_table(positions, inv_freq, scale, streams, dtype)
    half = inv_freq.shape[0]
    n = positions.shape[-1]
    cos = torch.empty(n, 2 * half, dtype=dtype, device=positions.device)
    sin = torch.empty_like(cos)
    stream_stride = positions.stride(0) if positions.dim() == 2 else 0
    _rotary_kernel[(n,)](positions, inv_freq, streams, cos, sin, stream_stride, positions.stride(-1), scale,
                         HALF=half, HALF_PAD=triton.next_power_of_2(half), LIBDEVICE=not _INTERPRETED, num_warps=1,
                         **_AS_TORCH_ROUNDS)
    return cos, sin


def _rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    if not (_usable(qkv, cos, sin) and qkv.stride(-1) == 1 and cos.is_contiguous() and sin.is_contiguous()):
        return _torch_rope(qkv, cos, sin, heads, head_dim)
    n = qkv.shape[1]
    out = torch.empty(1, heads, n, head_dim, dtype=qkv.dtype, device=qkv.device)
    # a few heads per program: a 640-token prompt's 64 heads were 40,960 one-warp programs
    _rope_kernel[(n, triton.cdiv(heads, ROPE_HEADS))](qkv, cos, sin, out, n, heads, qkv.stride(1), HALF=head_dim // 2,
                                                      HALF_PAD=triton.next_power_of_2(head_dim // 2),
                                                      HEADS=ROPE_HEADS, num_warps=2, **_AS_TORCH_ROUNDS)
    return out


def _silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    if not _usable(gate_up):
        return _torch_silu_mul(gate_up)
    gate_up = gate_up.contiguous()
    inner = gate_up.shape[-1] // 2
    out = torch.empty(*gate_up.shape[:-1], inner, dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(inner))
    grid = (gate_up.numel() // (2 * inner), triton.cdiv(inner, block))
    _silu_mul_kernel[grid](gate_up, out, inner, BLOCK=block, LIBDEVICE=not _INTERPRETED, num_warps=4,
                           **_AS_TORCH_ROUNDS)
    return out


TRITON = Ops(_add_rms_norm, _rotary_table, _rope, _silu_mul)


if triton is not None:
    @triton.jit
    def _add_rms_kernel(X, Delta, W, Total, Normed, hidden, eps, BLOCK: tl.constexpr):
        # one row per program: the sum rounded to the dtype (torch's x + delta), its mean square in float32,
        # the normalised row rounded, then times the weight, rounded (transformers' RMSNorm, eagerly)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < hidden
        at = row * hidden + cols
        dtype = Total.dtype.element_ty
        total = (tl.load(X + at, mask=mask, other=0.0).to(tl.float32)
                 + tl.load(Delta + at, mask=mask, other=0.0).to(tl.float32)).to(dtype)
        tl.store(Total + at, total, mask=mask)
        t32 = total.to(tl.float32)
        scale = tl.rsqrt(tl.sum(t32 * t32, axis=0) / hidden + eps)
        normed = (t32 * scale).to(dtype).to(tl.float32)
        weight = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Normed + at, (weight * normed).to(dtype), mask=mask)

    @triton.jit
    def _rotary_kernel(Positions, InvFreq, Streams, Cos, Sin, stream_stride, token_stride, scale,
                       HALF: tl.constexpr, HALF_PAD: tl.constexpr, LIBDEVICE: tl.constexpr):
        # one token per program: each frequency's angle from its stream's position, in float32 (torch's), the
        # cosine and sine scaled and rounded, written to both halves of the row
        token = tl.program_id(0).to(tl.int64)
        j = tl.arange(0, HALF_PAD)
        mask = j < HALF
        stream = tl.load(Streams + j, mask=mask, other=0).to(tl.int64)
        position = tl.load(Positions + stream * stream_stride + token * token_stride, mask=mask, other=0)
        angle = position.to(tl.float32) * tl.load(InvFreq + j, mask=mask, other=0.0).to(tl.float32)
        if LIBDEVICE:  # accurate float32 (inductor's choice too: the angles reach thousands of radians)
            cos, sin = libdevice.cos(angle), libdevice.sin(angle)
        else:  # Triton's interpreter (the tests) has no libdevice
            cos, sin = tl.cos(angle), tl.sin(angle)
        cos = (cos * scale).to(Cos.dtype.element_ty)
        sin = (sin * scale).to(Sin.dtype.element_ty)
        row = token * 2 * HALF
        tl.store(Cos + row + j, cos, mask=mask)
        tl.store(Cos + row + HALF + j, cos, mask=mask)
        tl.store(Sin + row + j, sin, mask=mask)
        tl.store(Sin + row + HALF + j, sin, mask=mask)

    @triton.jit
    def _rope_kernel(QKV, Cos, Sin, Out, n, heads, token_stride, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
                     HEADS: tl.constexpr):
        # one token and HEADS heads per program; x * cos + rotate_half(x) * sin with each product and the sum
        # rounded, as torch computes it eagerly; out is [1, heads, n, d]
        token = tl.program_id(0).to(tl.int64)
        head = (tl.program_id(1) * HEADS + tl.arange(0, HEADS)).to(tl.int64)[:, None]
        j = tl.arange(0, HALF_PAD)[None, :]
        in_row = j < HALF
        mask = (head < heads) & in_row
        dtype = Out.dtype.element_ty
        src = QKV + token * token_stride + head * 2 * HALF
        x1 = tl.load(src + j, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF + j, mask=mask, other=0.0).to(tl.float32)
        row = token * 2 * HALF
        cos1 = tl.load(Cos + row + j, mask=in_row, other=0.0).to(tl.float32)
        cos2 = tl.load(Cos + row + HALF + j, mask=in_row, other=0.0).to(tl.float32)
        sin1 = tl.load(Sin + row + j, mask=in_row, other=0.0).to(tl.float32)
        sin2 = tl.load(Sin + row + HALF + j, mask=in_row, other=0.0).to(tl.float32)
        first = (x1 * cos1).to(dtype).to(tl.float32) + (-x2 * sin1).to(dtype).to(tl.float32)
        second = (x2 * cos2).to(dtype).to(tl.float32) + (x1 * sin2).to(dtype).to(tl.float32)
        dst = Out + (head * n + token) * 2 * HALF
        tl.store(dst + j, first.to(dtype), mask=mask)
        tl.store(dst + HALF + j, second.to(dtype), mask=mask)

    @triton.jit
    def _silu_mul_kernel(GateUp, Out, inner, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
        # silu(gate) rounded, then times up, rounded (torch's F.silu(gate) * up)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inner
        dtype = Out.dtype.element_ty
        gate = tl.load(GateUp + row * 2 * inner + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(GateUp + row * 2 * inner + inner + cols, mask=mask, other=0.0).to(tl.float32)
        if LIBDEVICE:
            exp = libdevice.exp(-gate)
        else:
            exp = tl.exp(-gate)
        silu = (gate / (1.0 + exp)).to(dtype).to(tl.float32)
        tl.store(Out + row * inner + cols, (silu * up).to(dtype), mask=mask)
