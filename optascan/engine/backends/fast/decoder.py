"""A compact decoder for the Llama-style language models inside VLMs (LLaVA, Idefics3/SmolVLM: Llama; Qwen2-VL:
Qwen2 with M-RoPE), with a static KV cache: the fast backend's own decode path (issue #9).

Weights come from the transformers model that is already loaded (same safetensors): q/k/v are fused into one
matrix and gate/up into another at build time, so a decode step is 4 matmuls per layer. Rotary tables come from
the model's own rotary module (``inv_freq`` and ``attention_scaling``), so every RoPE variant transformers knows
(default, llama3, ...) is matched exactly; Qwen2-VL's multimodal RoPE is the same table indexed by three position
streams (time, height, width) — for text all three are equal and it is plain RoPE.

Shapes are static once built (cache of ``max_tokens`` positions, batch 1), which is what CUDA graph capture needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import attention, elementwise, gemv
from .attention import decode_attention


@dataclass(frozen=True)
class DecoderShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    qkv_bias: bool
    mrope_section: tuple[int, ...] | None  # Qwen2-VL: rotary frequencies split over (t, h, w) positions


class CompactDecoder(nn.Module):
    def __init__(self, shape: DecoderShape, *, max_tokens: int, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        self.shape, self.max_tokens = shape, max_tokens
        s = shape
        # Filled by build_from with the model's own tensors (fused q/k/v and gate/up are views the model's
        # layers share), so building allocates nothing but the KV cache.
        self.qkv_weight: list[torch.Tensor] = []
        self.qkv_bias: list[torch.Tensor | None] = []
        self.gate_up_weight: list[torch.Tensor] = []
        self.o: list[nn.Linear] = []
        self.down: list[nn.Linear] = []
        self.norm_in: list[torch.Tensor] = []
        self.norm_post: list[torch.Tensor] = []
        self.norm_final: torch.Tensor | None = None
        self.embed: nn.Embedding | None = None
        self.lm_head: nn.Linear | None = None
        # one-token steps' projections by our Triton kernel on CUDA (OPTASCAN_FAST_GEMV=torch keeps cuBLAS, for
        # comparison), else torch's; the elementwise work (norms, rotary, SiLU gate) by our Triton kernels on CUDA
        # (elementwise.py), else by torch code, which compile_layers can compile instead
        kernel = gemv.enabled(device)
        self.linear = gemv.linear if kernel else F.linear
        self.gated = gemv.gated_linear if kernel else None
        self.compiled = False
        self._use(elementwise.TRITON if elementwise.enabled(device) else elementwise.TORCH)
        # one-token steps attend with our Triton kernel where it runs (CUDA; OPTASCAN_FAST_ATTENTION=sdpa
        # keeps PyTorch's SDPA, for comparison), else SDPA
        probe = torch.empty(1, s.heads, 1, s.head_dim, device=device)
        self.kernel_attention = attention.available(probe) and os.environ.get("OPTASCAN_FAST_ATTENTION") != "sdpa"
        self.inv_freq = torch.ones(s.head_dim // 2, device=device)
        self.rope_scale = 1.0
        self.rope_streams = elementwise.rope_streams(s.mrope_section, s.head_dim // 2, device)
        cache = (s.layers, 1, s.kv_heads, max_tokens, s.head_dim)
        self.k_cache = torch.zeros(cache, dtype=dtype, device=device)
        self.v_cache = torch.zeros(cache, dtype=dtype, device=device)

    def _use(self, ops: elementwise.Ops) -> None:
        """The layer code with ``ops`` for its elementwise work: one-token steps (our projection kernels where
        they run) and prompts (torch's matmuls)."""
        self.ops = ops
        self.one_token_fns = (partial(_before_attention, linear=self.linear, ops=ops),
                              partial(_after_attention, linear=self.linear, gated=self.gated, ops=ops))
        self.prefill_fns = (partial(_before_attention, ops=ops), partial(_after_attention, ops=ops))
        self.finish_fn = partial(_finish, ops=ops)  # a one-token step's final norm
        self.rotary_fn = ops.rotary_table  # a one-token step's rotary table

    # --- rotary tables ---------------------------------------------------------------------------------
    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [seq, head_dim] for ``positions`` [seq] or Qwen2-VL's [3, seq]."""
        table = self.rotary_fn if positions.numel() == 1 else self.ops.rotary_table
        return table(positions, self.inv_freq, self.rope_scale, self.rope_streams, self.k_cache.dtype)

    def prompt_positions(self, n: int) -> torch.Tensor:
        """Positions 0..n-1 in the layout ``rotary`` takes: [n], or M-RoPE's [3, n] (a text-only prompt)."""
        positions = torch.arange(n, device=self.k_cache.device)
        return positions.expand(3, n) if self.shape.mrope_section else positions

    # --- forward ---------------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor,
                all_logits: bool = False, last: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``embeds`` [1, n, hidden] at cache positions start..start+n-1; logits of the last (or all, or of
        position ``last``, a device tensor [1]: a padded prompt's last real token)."""
        n = embeds.shape[1]
        end = start + n
        if end > self.max_tokens:
            raise ValueError(f"{end} positions exceed the cache of {self.max_tokens}")
        # causal within the new tokens, everything before them visible
        mask = None
        if n > 1 and start == 0:
            mask = CAUSAL  # a fresh prompt: plain causal attention, which the fused SDPA kernels take without a mask
        elif n > 1:
            mask = torch.ones(n, end, dtype=torch.bool, device=embeds.device).tril(diagonal=start)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k_cache[i, :, :, start:end] = k
            self.v_cache[i, :, :, start:end] = v
            return _attend(q, self.k_cache[i, :, :, :end], self.v_cache[i, :, :, :end], mask, self.shape)

        x, delta = self._layers(embeds, cos, sin, attend)
        # the final norm only over the rows whose logits are wanted (it is per row), uncompiled: a few small
        # kernels on one row, not a dynamic-length graph more to compile at load
        if last is not None:
            x, delta = x.index_select(1, last), delta.index_select(1, last)
        elif not all_logits:
            x, delta = x[:, -1:], delta[:, -1:]
        return self.lm_head(_finish(x, delta, self.norm_final, self.shape.eps, ops=self.ops))

    def step(self, token: torch.Tensor, index: torch.Tensor, rope_position: torch.Tensor,
             length: int | None = None) -> torch.Tensor:
        """One decode step with static shapes and no host synchronisation (what a CUDA graph captures).

        ``token`` [1, 1], ``index`` [1] (its cache slot) and ``rope_position`` [1] are device tensors; attention
        runs over the first ``length`` cache slots (a bucket the caller picks, > index; default all) with the
        slots after ``index`` masked, so no shape depends on the step. Returns the logits [1, vocab].
        """
        length = length or self.max_tokens
        if self.kernel_attention:
            # our split-K kernel writes the new key and value into the cache slot ``index`` itself and reads
            # the valid length from it: no mask, no separate cache-write kernels
            def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return decode_attention(q, self.k_cache[i, :, :, :length], self.v_cache[i, :, :, :length], index,
                                        new_keys=k, new_values=v)
        else:  # SDPA with an additive mask built once per step (a boolean one is converted in every layer)
            slots = torch.arange(length, device=index.device)
            mask = torch.zeros(length, dtype=self.k_cache.dtype, device=index.device)
            mask = mask.masked_fill(slots > index, float("-inf")).view(1, 1, 1, -1)

            def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                self.k_cache[i].index_copy_(2, index, k)
                self.v_cache[i].index_copy_(2, index, v)
                return _attend(q, self.k_cache[i, :, :, :length], self.v_cache[i, :, :, :length], mask, self.shape)

        x, delta = self._layers(self.embed(token), *self.rotary(rope_position), attend)
        normed = self.finish_fn(x, delta, self.norm_final, self.shape.eps)
        if self.linear is F.linear:  # the module itself, hooks included
            return self.lm_head(normed)[:, -1]
        return self.linear(normed, self.lm_head.weight, self.lm_head.bias)[:, -1]

    def _layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attend) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder layers over ``x`` [1, n, hidden]: the residual stream and the last layer's MLP output, for
        the caller's final norm (``_finish``); ``attend(i, q, k, v)`` puts layer i's new keys and values into the
        cache and returns the queries' attention over it."""
        s = self.shape
        cos, sin = cos[None, None], sin[None, None]  # [1, 1, n, head_dim]
        one_token = x.shape[1] == 1
        before, after = self.one_token_fns if one_token else self.prefill_fns
        # each layer's last residual add is left to the next layer's norm (and the last one's to the final
        # norm), where compiled code fuses it into the norm's kernel: one kernel less per layer
        delta = torch.zeros_like(x)
        # a prompt's length is the one dynamic size of the compiled prompt path: marked, so it compiles once
        # for every length (sized all-dynamic, its length could be unified with an equal weight size and
        # recompile at the next length)
        dynamic = self.compiled and not one_token
        if dynamic:
            for tensor, dim in ((x, 1), (delta, 1), (cos, 2), (sin, 2)):
                torch._dynamo.mark_dynamic(tensor, dim)
        for i in range(s.layers):
            x, q, k, v = before(x, delta, self.norm_in[i], self.qkv_weight[i], self.qkv_bias[i], cos, sin, s.heads,
                                s.kv_heads, s.head_dim, s.eps)
            attn = attend(i, q, k, v)
            if dynamic:
                torch._dynamo.mark_dynamic(attn, 2)
            x, delta = after(x, attn, self.o[i].weight, self.o[i].bias, self.norm_post[i],
                             self.gate_up_weight[i], self.down[i].weight, self.down[i].bias, s.eps)
        return x, delta

    def compile_layers(self) -> None:
        """Compile the per-layer code around attention with torch.compile, torch's elementwise code included
        (inductor fuses the norms, rotary and activation into a few kernels), instead of our elementwise kernels:
        OPTASCAN_FAST_COMPILE=1, or CUDA without Triton. One-token steps: every layer has the same shapes, so each
        part compiles once, and attention stays outside, so the cache buckets need no recompiles. Prompts: the
        same code over the prompt's length, compiled once for any length (dynamic). Compiles on first use: the
        backend warms both at load (compiling was 8-13 s of a cold load on an H100 host; with our kernels the
        whole cold warm-up is 7.4-9.5 s: bench/results/fast_warmup-*)."""
        # torch.compile keeps one cache per function, shared by every decoder of the process; a process that
        # loads model after model (a server, the GPU checks) adds entries each time, and dynamo's default limit
        # of 8 then fails the 9th load (fullgraph=True makes it an error, not a silent fallback)
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, 256)
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)
        self._use(elementwise.TORCH)
        self.one_token_fns = tuple(torch.compile(fn, fullgraph=True, dynamic=False) for fn in self.one_token_fns)
        self.finish_fn = torch.compile(self.finish_fn, fullgraph=True, dynamic=False)
        # prompts: the two halves of a layer, for any length (marked dynamic); their final norm runs on the rows
        # wanted only, uncompiled (forward)
        self.prefill_fns = tuple(torch.compile(fn, fullgraph=True) for fn in self.prefill_fns)
        self.rotary_fn = torch.compile(self.rotary_fn, fullgraph=True, dynamic=False)  # one kernel, not ~10
        self.compiled = True


def _before_attention(x: torch.Tensor, delta: torch.Tensor, norm: torch.Tensor, qkv_weight: torch.Tensor,
                      qkv_bias: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int,
                      head_dim: int, eps: float, linear=F.linear,
                      ops: elementwise.Ops = elementwise.TORCH) -> tuple[torch.Tensor, ...]:
    """The previous layer's last residual add (``delta``), norm, fused q/k/v projection and rotary: the new
    residual stream x, q [1, heads, n, d], k and v [1, kv_heads, n, d]."""
    n = x.shape[1]
    x, normed = ops.add_rms_norm(x, delta, norm, eps)
    qkv = linear(normed, qkv_weight, qkv_bias)
    qk = ops.rope(qkv, cos, sin, heads + kv_heads, head_dim)  # queries and keys rotated together: one kernel
    v = qkv[..., (heads + kv_heads) * head_dim:].view(1, n, kv_heads, head_dim).transpose(1, 2)
    return x, qk[:, :heads], qk[:, heads:], v


def _after_attention(x: torch.Tensor, attn: torch.Tensor, o_weight: torch.Tensor, o_bias: torch.Tensor | None,
                     norm: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor,
                     down_bias: torch.Tensor | None, eps: float, linear=F.linear, gated=None,
                     ops: elementwise.Ops = elementwise.TORCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Output projection and residual, then norm, fused gate/up, SiLU and down projection: the residual
    stream and the MLP's output, which the next layer adds (``_before_attention``'s delta)."""
    n = x.shape[1]
    x, normed = ops.add_rms_norm(x, linear(attn.transpose(1, 2).reshape(1, n, -1), o_weight, o_bias), norm, eps)
    activated = gated(normed, gate_up_weight) if gated else ops.silu_mul(F.linear(normed, gate_up_weight))
    return x, linear(activated, down_weight, down_bias)


def _finish(x: torch.Tensor, delta: torch.Tensor, norm: torch.Tensor, eps: float,
            ops: elementwise.Ops = elementwise.TORCH) -> torch.Tensor:
    """The last layer's residual add and the final norm."""
    return ops.add_rms_norm(x, delta, norm, eps)[1]


CAUSAL = torch.empty(0)  # the mask meaning "causal over the whole sequence" (compared by identity)


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
            s: DecoderShape) -> torch.Tensor:
    """Attention of q [1, heads, n, d] over the cache [1, kv_heads, T, d] → [1, heads, n, d]."""
    if mask is CAUSAL:
        return F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=s.heads != s.kv_heads)
    if s.heads == s.kv_heads:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    if q.shape[2] == 1:
        # One new token: the query heads that share a key/value head become that head's queries, so the cache
        # is read once as it is (grouped-query attention by expansion would copy it heads/kv_heads times).
        group = s.heads // s.kv_heads
        out = F.scaled_dot_product_attention(q.reshape(1, s.kv_heads, group, s.head_dim), keys, values,
                                             attn_mask=mask)
        return out.reshape(1, s.heads, 1, s.head_dim)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)


# --- building from a transformers model -----------------------------------------------------------------
def build_from(language_model: Any, lm_head: nn.Linear, config: Any, *, max_tokens: int) -> CompactDecoder:
    """A CompactDecoder holding fused copies of ``language_model``'s layer weights (embeddings and head shared)."""
    layers = language_model.layers
    first = layers[0].self_attn
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    mrope = rope.get("mrope_section") if isinstance(rope, dict) else None
    shape = DecoderShape(
        layers=len(layers), hidden=config.hidden_size, heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads, head_dim=head_dim, intermediate=config.intermediate_size,
        eps=config.rms_norm_eps, qkv_bias=first.q_proj.bias is not None,
        mrope_section=tuple(mrope) if mrope else None)
    if getattr(config, "use_sliding_window", False):
        raise NotImplementedError("sliding-window attention is not in the compact decoder")
    weight = language_model.embed_tokens.weight
    decoder = CompactDecoder(shape, max_tokens=max_tokens, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        for layer in layers:
            a, m = layer.self_attn, layer.mlp
            decoder.qkv_weight.append(_fuse(a.q_proj, a.k_proj, a.v_proj, "weight"))
            decoder.qkv_bias.append(_fuse(a.q_proj, a.k_proj, a.v_proj, "bias") if shape.qkv_bias else None)
            decoder.gate_up_weight.append(_fuse(m.gate_proj, m.up_proj, None, "weight"))
            decoder.o.append(a.o_proj)
            decoder.down.append(m.down_proj)
            decoder.norm_in.append(layer.input_layernorm.weight)
            decoder.norm_post.append(layer.post_attention_layernorm.weight)
        decoder.norm_final = language_model.norm.weight
        rotary = language_model.rotary_emb
        decoder.inv_freq = rotary.inv_freq.detach().float().clone()
        decoder.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
    decoder.embed, decoder.lm_head = language_model.embed_tokens, lm_head
    return decoder.eval()


def _fuse(a: nn.Linear, b: nn.Linear, c: nn.Linear | None, name: str) -> torch.Tensor:
    """One tensor holding the parts end to end; the parts become views into it (no second copy in memory)."""
    parts = [m for m in (a, b, c) if m is not None]
    fused = torch.cat([getattr(m, name).detach() for m in parts])
    start = 0
    for m in parts:
        size = getattr(m, name).shape[0]
        getattr(m, name).data = fused[start:start + size]
        start += size
    return fused
