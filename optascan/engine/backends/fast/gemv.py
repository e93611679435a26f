"""One token's projections (a matrix times one row) as a Triton kernel — experimental, off by default.

Why: a decode step is mostly its projections, each one row through a weight matrix, so bound by reading the
weights. cuBLAS reaches 31–39 % of an H200's bandwidth on Qwen2.5-VL-3B's small q/k/v and o matrices and 64–76 %
on the MLP's (bench/results/matmul_ceiling-*.json), and adds a split-K reduction kernel to the down projection.
This kernel gives each program a few rows and streams them whole along K, so every weight byte is read once,
coalesced, with no second pass. Whether it beats cuBLAS is for the GPU to say: ``OPTASCAN_FAST_GEMV=triton``
switches it on (``bench/matmul_ceiling.py --impl triton`` and the fast_decode variant ``fast_triton_gemv``
measure it); tests check it through Triton's interpreter.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def enabled() -> bool:
    return triton is not None and os.environ.get("OPTASCAN_FAST_GEMV") == "triton"


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for one row ``x`` [..., K] (any leading dims of size 1) by the kernel; anything else, and
    off CUDA (unless Triton's interpreter runs), by ``F.linear``."""
    if (x.numel() != x.shape[-1] or weight.stride(1) != 1 or weight.dtype != x.dtype
            or not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")):
        return F.linear(x, weight, bias)
    n, k = weight.shape
    out = torch.empty(*x.shape[:-1], n, dtype=x.dtype, device=x.device)
    block_n = 8 if n <= 8192 else 16
    block_k = min(512, max(16, triton.next_power_of_2(k)))
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        weight, x.contiguous(), bias if bias is not None else weight, out, n, k, weight.stride(0),
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return out


if triton is not None:

    @triton.jit
    def _gemv_kernel(W, X, Bias, Y, n, k, w_row_stride, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)  # row * stride passes 2**31
        row_ok = rows < n
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for start in range(0, k, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            col_ok = cols < k
            x = tl.load(X + cols, mask=col_ok, other=0.0).to(tl.float32)
            w = tl.load(W + rows[:, None] * w_row_stride + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                        other=0.0)
            acc += w.to(tl.float32) * x[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(Bias + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(Y + rows, y.to(Y.dtype.element_ty), mask=row_ok)
