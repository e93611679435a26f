"""One new token's attention over the KV cache, as a Triton split-K kernel ("flash decoding").

Why our own: for one query the fused SDPA kernels tile 64–128 query rows, so the grid is one tile per key/value
head — 2 thread blocks for Qwen2.5-VL-3B — and a step over a 2,048-slot cache spends ~40 µs per layer in
attention (the step profile, bench/results/profile_fast_step-*.json). Here each program reads one split of the
cache for one key/value head with all the query heads that share it (grouped-query attention without copying
the cache), keeps a running softmax, and writes a partial result; a second small kernel merges the splits by
their log-sum-exp. The valid length comes from the device tensor ``index`` (the new token's slot), so the
kernel needs no mask and no host value: programs past it return at once, and a CUDA graph captured for a
cache bucket stays right for every position in it.

Importable without Triton (``available()`` says whether the kernel can run); tests run the same kernel on the
CPU through Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the decoder keeps SDPA
    triton = None

SPLIT = 128  # the most cache slots per program
BLOCK = 64  # the most slots per inner iteration
PROGRAMS = 256  # what the split aims at over a whole cache bucket
# Each distinct constexpr (and each integer argument Triton specialises: ==1, multiple of 16) is one more kernel
# compiled at load. The merge's padded split count has a floor, and the split counts and lengths are plain
# arguments, so the cache buckets up to 2,048 slots share one kernel of each kind: per bucket, they were about a
# second and a half of a cold warm-up (bench/results/fast_warmup-*.json, decode_other_steps_s).
MERGE_PAD = 32


def split_for(kv_heads: int, length: int) -> int:
    """Cache slots per program for ``kv_heads`` heads over a ``length``-slot cache: SPLIT, or 64 where few
    key/value heads would leave most SMs idle. On an H100 (bench/results/attention_split-*.json) a layer's
    attention costs ~7 µs at any split for Qwen2.5-VL's 2 and 4 key/value heads — two kernels' latency, not the
    1–4 MB read — with 64 a little ahead for 4; LLaVA's 32 heads want 128 (10 µs; 15 µs at 32)."""
    split = SPLIT
    while split > 64 and kv_heads * triton.cdiv(length, split) < PROGRAMS:
        split //= 2
    return split


def available(query: torch.Tensor) -> bool:
    """Whether the kernel runs for ``query`` [1, heads, 1, head_dim]: Triton, a CUDA tensor (or the
    interpreter), and a head size tensor cores take."""
    if triton is None or query.shape[2] != 1:
        return False
    d = query.shape[-1]
    on_device = query.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return on_device and d >= 16 and d & (d - 1) == 0


def decode_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor,
                     scale: float | None = None, new_keys: torch.Tensor | None = None,
                     new_values: torch.Tensor | None = None, split: int | None = None) -> torch.Tensor:
    """Attention of ``query`` [1, heads, 1, d] over cache slots 0..index of ``keys``/``values`` [1, kv, T, d]
    (slots after ``index`` are ignored) → [1, heads, 1, d]. With ``new_keys``/``new_values`` [1, kv, 1, d] the
    kernel first writes them into slot ``index`` of the cache (the decode step's cache write, fused).
    ``split``: cache slots per program (a power of two ≥ 16), by default ``split_for`` the cache's shape."""
    _, heads, _, d = query.shape
    kv_heads, length = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    split = split or split_for(kv_heads, length)
    splits = triton.cdiv(length, split)
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    write = new_keys is not None
    tensors = [query, keys, values] + ([new_keys, new_values] if write else [])
    if write and not (keys.stride(-1) == 1 and values.stride(-1) == 1):
        raise ValueError("the cache must have contiguous head dimensions to be written in place")
    query, keys, values, *new = [t if t.stride(-1) == 1 else t.contiguous() for t in tensors]
    new_keys, new_values = new if write else (keys, values)  # unused when not writing
    partial = torch.empty(kv_heads, splits, group, d, dtype=torch.float32, device=query.device)
    lse = torch.empty(kv_heads, splits, group, dtype=torch.float32, device=query.device)
    _partial_kernel[(kv_heads, splits)](
        query, keys, values, new_keys, new_values, index, partial, lse, scale, length, query.stride(1),
        keys.stride(1), keys.stride(2), values.stride(1), values.stride(2), new_keys.stride(1),
        new_values.stride(1), splits, WRITE=write,
        # float32 models get float32 products (tl.dot would use TF32), as transformers' float32 SDPA does
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), D=d, SPLIT=split,
        BLOCK=min(BLOCK, split))
    out = torch.empty(1, heads, 1, d, dtype=query.dtype, device=query.device)
    _merge_kernel[(heads,)](partial, lse, out, splits, GROUP=group, D=d,
                            SPLITS_PAD=max(MERGE_PAD, triton.next_power_of_2(splits)))
    return out


if triton is not None:

    @triton.jit(do_not_specialize=["length", "splits"])
    def _partial_kernel(Q, K, V, NewK, NewV, Index, Partial, Lse, scale, length, q_head_stride, k_head_stride,
                        k_slot_stride, v_head_stride, v_slot_stride, new_k_head_stride, new_v_head_stride, splits,
                        WRITE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr,
                        SPLIT: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
        head = tl.program_id(0)
        split = tl.program_id(1)
        last = tl.load(Index)  # the new token's slot: attend over 0..last
        start = split * SPLIT
        end = tl.minimum(tl.minimum(start + SPLIT, last + 1), length)
        rows = tl.arange(0, GROUP_PAD)
        dims = tl.arange(0, D)
        if WRITE:
            # only the program whose split holds the new slot writes it and only it reads it, after a barrier
            # (a block's global writes are visible to its own threads past __syncthreads)
            mine = (dims < D) & (split == last // SPLIT) & (last < length)
            tl.store(K + head * k_head_stride + last * k_slot_stride + dims,
                     tl.load(NewK + head * new_k_head_stride + dims), mask=mine)
            tl.store(V + head * v_head_stride + last * v_slot_stride + dims,
                     tl.load(NewV + head * new_v_head_stride + dims), mask=mine)
            tl.debug_barrier()
        q = tl.load(Q + (head * GROUP + rows)[:, None] * q_head_stride + dims[None, :], mask=rows[:, None] < GROUP,
                    other=0.0)
        best = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        total = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D], tl.float32)
        for offset in range(start, end, BLOCK):
            slots = offset + tl.arange(0, BLOCK)
            valid = slots < end
            k = tl.load(K + head * k_head_stride + slots[:, None] * k_slot_stride + dims[None, :],
                        mask=valid[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [GROUP_PAD, BLOCK], fp32
            scores = tl.where(valid[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, 1))
            weights = tl.exp(scores - new_best[:, None])
            rescale = tl.exp(best - new_best)
            v = tl.load(V + head * v_head_stride + slots[:, None] * v_slot_stride + dims[None, :],
                        mask=valid[:, None], other=0.0)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
            total = total * rescale + tl.sum(weights, 1)
            best = new_best
        where = (head * splits + split) * GROUP + rows
        live = rows < GROUP
        empty = total == 0.0  # a split wholly past the new token
        tl.store(Lse + where, tl.where(empty, float("-inf"), best + tl.log(total)), mask=live)
        result = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, total)[:, None])
        tl.store(Partial + where[:, None] * D + dims[None, :], result, mask=live[:, None])

    @triton.jit(do_not_specialize=["splits"])
    def _merge_kernel(Partial, Lse, Out, splits, GROUP: tl.constexpr, D: tl.constexpr,
                      SPLITS_PAD: tl.constexpr):
        q_head = tl.program_id(0)
        kv_head = q_head // GROUP
        row = q_head % GROUP
        parts = tl.arange(0, SPLITS_PAD)
        dims = tl.arange(0, D)
        where = (kv_head * splits + parts) * GROUP + row
        lse = tl.load(Lse + where, mask=parts < splits, other=float("-inf"))
        weights = tl.exp(lse - tl.max(lse, 0))  # split 0 always holds slot 0, so the max is finite
        weights = weights / tl.sum(weights, 0)
        partial = tl.load(Partial + where[:, None] * D + dims[None, :], mask=(parts < splits)[:, None], other=0.0)
        tl.store(Out + q_head * D + dims, tl.sum(partial * weights[:, None], 0).to(Out.dtype.element_ty))
