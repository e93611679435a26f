"""One token's projections (a matrix times one row) as a Triton kernel — experimental, off by default.

Why: a decode step is mostly its projections, each one row through a weight matrix, so bound by reading the
weights. cuBLAS reaches 31–39 % of an H200's bandwidth on Qwen2.5-VL-3B's small q/k/v and o matrices and 64–76 %
on the MLP's (bench/results/matmul_ceiling-*.json), and adds a split-K reduction kernel to the down projection.
This kernel gives each program a few rows and streams them whole along K, so every weight byte is read once,
coalesced, with no second pass; its tile (rows per program, columns per load, warps) comes from
``bench/gemv_sweep.py`` on the GPU. Whether it beats cuBLAS is for the GPU to say: ``OPTASCAN_FAST_GEMV=triton``
switches it on (``bench/matmul_ceiling.py --impl triton`` and the fast_decode variant ``fast_triton_gemv``
measure it); tests check it through Triton's interpreter.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


class Tile(NamedTuple):
    rows: int  # weight rows per program
    cols: int  # columns per load along K
    warps: int


def enabled() -> bool:
    return triton is not None and os.environ.get("OPTASCAN_FAST_GEMV") == "triton"


def default_tile(n: int, k: int) -> Tile:
    """A tile for an [n, k] weight: enough programs to keep every SM reading (a few per SM), each load a few KB."""
    cols = min(1024, max(16, triton.next_power_of_2(k)))
    rows = 1
    while rows < 16 and triton.cdiv(n, rows * 2) >= 1024 and rows * 2 * cols <= 8192:
        rows *= 2
    return Tile(rows, cols, 4)


_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter runs kernels on CPU tensors (tests)


def _usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (triton is not None and x.numel() == x.shape[-1] and weight.stride(1) == 1 and weight.dtype == x.dtype
            and (x.is_cuda or _INTERPRETED))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           tile: Tile | None = None) -> torch.Tensor:
    """``F.linear`` for one row ``x`` [..., K] (any leading dims of size 1) by the kernel; anything else, and
    off CUDA (unless Triton's interpreter runs), by ``F.linear``."""
    if not _usable(x, weight):
        return F.linear(x, weight, bias)
    n, k = weight.shape
    return _launch(x, weight, bias, n, k, tile or default_tile(n, k), gated=False)


def gated_linear(x: torch.Tensor, gate_up_weight: torch.Tensor, tile: Tile | None = None) -> torch.Tensor:
    """``silu(gate) * up`` of one row through a fused [2I, K] gate/up weight, in one kernel: each program reads
    the same rows of both halves, so the MLP's activation needs no kernel or round trip of its own."""
    if not _usable(x, gate_up_weight):
        gate, up = F.linear(x, gate_up_weight).chunk(2, dim=-1)
        return F.silu(gate) * up
    n, k = gate_up_weight.shape
    return _launch(x, gate_up_weight, None, n // 2, k, tile or default_tile(n // 2, k), gated=True)


def _launch(x, weight, bias, n, k, tile: Tile, gated: bool) -> torch.Tensor:
    out = torch.ops.optascan.gemv(x.contiguous(), weight, bias, n, k, list(tile), gated)
    return out.view(*x.shape[:-1], n)


if triton is not None:
    # an opaque op to torch.compile: the compiled step calls the kernel as is, and traces nothing inside it
    @torch.library.custom_op("optascan::gemv", mutates_args=())
    def _gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n: int, k: int,
                 tile: list[int], gated: bool) -> torch.Tensor:
        out = torch.empty(n, dtype=x.dtype, device=x.device)
        rows, cols, warps = tile
        _gemv_kernel[(triton.cdiv(n, rows),)](
            weight, x, bias if bias is not None else weight, out, n, k, weight.stride(0),
            HAS_BIAS=bias is not None, GATED=gated, BLOCK_N=rows, BLOCK_K=cols, num_warps=warps)
        return out

    @_gemv_op.register_fake
    def _(x, weight, bias, n, k, tile, gated):
        return x.new_empty(n)


if triton is not None:

    @triton.jit
    def _gemv_kernel(W, X, Bias, Y, n, k, w_row_stride, HAS_BIAS: tl.constexpr, GATED: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)  # row * stride passes 2**31
        row_ok = rows < n
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        if GATED:  # rows n.. of the fused weight are the up projection's
            acc_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for start in range(0, k, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            col_ok = cols < k
            mask = row_ok[:, None] & col_ok[None, :]
            x = tl.load(X + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
            # the weights are read once per step: keep them from pushing the row and the KV cache out of L2
            w = tl.load(W + rows[:, None] * w_row_stride + cols[None, :], mask=mask, other=0.0,
                        eviction_policy="evict_first")
            acc += w.to(tl.float32) * x[None, :]
            if GATED:
                u = tl.load(W + (rows[:, None] + n) * w_row_stride + cols[None, :], mask=mask, other=0.0,
                            eviction_policy="evict_first")
                acc_up += u.to(tl.float32) * x[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(Bias + rows, mask=row_ok, other=0.0).to(tl.float32)
        if GATED:
            y = y / (1.0 + tl.exp(-y)) * tl.sum(acc_up, axis=1)
        tl.store(Y + rows, y.to(Y.dtype.element_ty), mask=row_ok)
