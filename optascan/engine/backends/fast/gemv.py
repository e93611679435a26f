"""One token's projections (a matrix times one row) as a Triton kernel: the fast engine's on CUDA.

Why: a decode step is mostly its projections, each one row through a weight matrix, so bound by reading the
weights. On an H100, cuBLAS reads Qwen2.5-VL-3B's q/k/v and o weights at 47–56 % of the bandwidth and the MLP's
at 66–67 % (with a split-K reduction kernel after the down projection). This kernel gives each program one or two
rows and streams them whole along K, so every weight byte is read once, coalesced, with no second pass; the
MLP's gate and up halves are read by the same program and leave as ``silu(gate) * up``. Its tiles come from
``bench/gemv_sweep.py`` (bench/results/gemv_sweep-*.json): 1.1–1.6× cuBLAS on every projection of the three
benchmark models. ``OPTASCAN_FAST_GEMV=torch`` turns it off (cuBLAS); ``=triton`` turns it on off CUDA too,
where Triton's interpreter runs it (the tests).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import elementwise

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


class Tile(NamedTuple):
    rows: int  # weight rows per program
    cols: int  # columns per load along K
    warps: int


def enabled(device: torch.device | str) -> bool:
    """Whether the fast engine's one-token projections use the kernel on ``device``: on CUDA unless
    OPTASCAN_FAST_GEMV=torch, elsewhere only if OPTASCAN_FAST_GEMV=triton (Triton's interpreter, for tests)."""
    choice = os.environ.get("OPTASCAN_FAST_GEMV", "")
    if triton is None or choice == "torch":
        return False
    return choice == "triton" or torch.device(device).type == "cuda"


def default_tile(n: int, k: int, gated: bool = False) -> Tile:
    """The tile for an [n, k] weight (n: output rows; the gate half's for the gated form). From the H100 sweep
    (bench/results/gemv_sweep-h100-*.json), within 2 % of its best tile on every projection it timed: the
    fused gate/up and the tall down projection one row per program, small square ones two rows in short loads
    with few warps, large ones (the head) two rows in long loads with eight warps."""
    if gated:
        tile = Tile(1, 2048, 2)
    elif k >= 2 * n:
        tile = Tile(1, 1024, 4)
    elif n <= 8192:
        tile = Tile(2, 512, 2)
    else:
        tile = Tile(2, 2048, 8)
    return tile._replace(cols=min(tile.cols, max(16, triton.next_power_of_2(k))))


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
        return silu_gate(x, gate_up_weight)
    n, k = gate_up_weight.shape
    return _launch(x, gate_up_weight, None, n // 2, k, tile or default_tile(n // 2, k, gated=True), gated=True)


def silu_gate(x: torch.Tensor, gate_up_weight: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` by torch's matmul (cuBLAS on CUDA) and torch's code: what the gated kernel computes."""
    return elementwise.TORCH.silu_mul(F.linear(x, gate_up_weight))


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
