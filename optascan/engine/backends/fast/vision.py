"""The Qwen2-VL-family vision towers' attention in one call per layer, for the fast engine's prefill.

Why: transformers' Qwen2.5-VL vision tower attends within windows of 64 patches (and per image in its few
full-attention layers). Without flash-attn — the device tool has none — it loops in Python: it reads the window
lengths back from the GPU (``tolist``, a sync per layer) and calls SDPA once per window, ~70 windows for a
1024x768 photo, in 28 of the model card's 32 layers: ~2,000 small attention calls whose launches, not their work,
set much of the vision time. transformers hands a flash-attention-style function the packed sequences' bounds
(``cu_seq_lens_q``) instead, and we register one:

- on CUDA in half precision, PyTorch's own variable-length flash kernel (``aten._flash_attention_forward`` with
  the bounds): every window of every image in one launch, no padding, no sync;
- elsewhere (CPU: what CI checks against transformers' loop), every window gathered into a padded batch
  [windows, heads, longest, d] and one SDPA with the padding masked.

transformers takes that branch when the attention implementation's name contains "flash" (its
``is_flash_attention_requested``), hence the name; only the vision tower's config is switched, so the language
model (ours) and the transformers engine keep theirs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

NAME = "flash_optascan_packed"  # "flash" routes transformers' vision attention to the packed call

_layout_cache: list[tuple[torch.Tensor, int, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []


def use_packed_attention(vision_tower: torch.nn.Module) -> bool:
    """Switch ``vision_tower`` (a Qwen2-VL-family ``model.visual``) to the packed attention; False where its
    config has no attention implementation to switch."""
    from transformers import AttentionInterface

    config = getattr(vision_tower, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        return False
    AttentionInterface.register(NAME, packed_attention)
    config._attn_implementation = NAME
    return True


def pad_mlp_widths(vision_tower: torch.nn.Module, multiple: int = 64) -> int:
    """Widen every gated MLP of ``vision_tower`` (``gate_proj``/``up_proj``/``down_proj``) whose inner width is
    not a multiple of ``multiple`` with zero rows and columns; the number of MLPs widened.

    Why: Qwen2.5-VL's vision MLPs are 3,420 wide. At that width cuBLAS can only use its 2-element-aligned kernels:
    on the H100 they took 17 of the 7B's 45 ms of vision tower (bench/results/profile_ttft-h100-*-full-*.json),
    at ~200 TFLOP/s. Measured gain so far is small: the vision stage went from 43.5 to 41.2 ms, two runs on two
    machines (fast_decode-h100-qwen2.5-vl-7b-full-vision-*-at-*.json); a profile of the current tower is pending.
    The padding changes no result: a zero gate row gives silu(0) * up = 0, which the zero column of ``down_proj``
    adds to nothing."""
    widened = 0
    for module in vision_tower.modules():
        gate, up, down = (getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj"))
        if not all(isinstance(layer, torch.nn.Linear) for layer in (gate, up, down)):
            continue
        width = gate.out_features
        extra = -width % multiple
        if not extra or up.out_features != width or down.in_features != width:
            continue
        for layer in (gate, up):
            layer.weight = torch.nn.Parameter(F.pad(layer.weight.data, (0, 0, 0, extra)), requires_grad=False)
            if layer.bias is not None:
                layer.bias = torch.nn.Parameter(F.pad(layer.bias.data, (0, extra)), requires_grad=False)
            layer.out_features = width + extra
        down.weight = torch.nn.Parameter(F.pad(down.weight.data, (0, extra)), requires_grad=False)
        down.in_features = width + extra
        widened += 1
    return widened


def fuse_rms_norms(vision_tower: torch.nn.Module) -> int:
    """Qwen2.5-VL's vision RMSNorms (two per block and the merger's) through PyTorch's one-kernel ``rms_norm``;
    the number switched. transformers' norm is five kernels over float32 copies of a [patches, 1,280] tensor
    (cast, square, mean, scale, cast back), 65 times per image. The result is the same: normalised in float32,
    rounded to the model's dtype, then scaled by the weight in that dtype, as transformers does."""
    switched = 0
    for module in vision_tower.modules():
        if type(module).__name__ == "Qwen2_5_VLRMSNorm" and hasattr(module, "variance_epsilon"):
            module.forward = functools.partial(_rms_norm, module)
            switched += 1
    return switched


def _rms_norm(module: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return module.weight * F.rms_norm(hidden_states, hidden_states.shape[-1:], eps=module.variance_epsilon)


def uses_flash_kernel(query: torch.Tensor) -> bool:
    return query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] % 8 == 0 \
        and query.shape[-1] <= 256


def _layout(bounds: torch.Tensor, total: int, longest: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For sequences packed back to back (``bounds``: cumulative starts, [count + 1], on the device): each
    padded slot's source position [count, longest], which slots are real [count, longest], and each position's
    slot in the flattened padded batch [total]. Built on the device from shapes known on the host: no sync."""
    for cached_bounds, cached_total, cached_longest, *layout in _layout_cache:
        if cached_bounds is bounds and cached_total == total and cached_longest == longest:
            return tuple(layout)
    given, bounds = bounds, bounds.to(torch.long)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    offsets = torch.arange(longest, device=bounds.device)
    real = offsets[None, :] < lengths[:, None]
    source = torch.where(real, starts[:, None] + offsets[None, :], 0)
    positions = torch.arange(total, device=bounds.device)
    sequence = torch.searchsorted(bounds[1:], positions, right=True)
    flat = sequence * longest + positions - bounds[sequence]
    # the vision forward passes the same bounds tensor to every windowed layer and another to the full ones
    # (two entries: a tensor of bounds kept here stays alive, so its identity cannot be reused by another)
    _layout_cache[:] = [*_layout_cache[-1:], (given, total, longest, source, real, flat)]
    return source, real, flat


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None = None, scaling: float | None = None,
                     dropout: float = 0.0, cu_seq_lens_q: torch.Tensor | None = None,
                     max_length_q: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Attention within each packed sequence of ``query``/``key``/``value`` [1, heads, total, d] → [1, total,
    heads, d] (the layout transformers' attention functions return)."""
    if cu_seq_lens_q is None:  # not packed: one sequence
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
        return out.transpose(1, 2), None
    _, heads, total, d = query.shape
    longest = int(max_length_q) if max_length_q is not None else total
    if uses_flash_kernel(query):
        bounds = cu_seq_lens_q.to(torch.int32)
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [total, heads, d]: the kernel's layout
        out = torch.ops.aten._flash_attention_forward(q, k, v, bounds, bounds, longest, longest, 0.0, False, False,
                                                      scale=scaling)[0]
        return out.unsqueeze(0), None
    source, real, flat = _layout(cu_seq_lens_q, total, longest)

    def padded(t: torch.Tensor) -> torch.Tensor:  # [1, heads, total, d] → [count, heads, longest, d]
        return t[0][:, source].transpose(0, 1)

    out = F.scaled_dot_product_attention(padded(query), padded(key), padded(value), attn_mask=real[:, None, None, :],
                                         scale=scaling)  # [count, heads, longest, d]
    out = out.transpose(0, 1).reshape(heads, -1, d)[:, flat]  # back to the packed order: [heads, total, d]
    return out.transpose(0, 1).unsqueeze(0), None
