"""torch.compile's work for the compact decoder, done on a side thread while the model's weights load.

Why: on a fresh machine (empty compile caches) compiling is most of the fast engine's warm-up — 12–20 s on the
device tool's H100 hosts for the 3B, depending on the host's CPU (bench/fast_warmup.py) — and it needs only the
decoder's shapes, which the config gives before a single weight is read. So a stand-in decoder with the real
shapes and random weights (two layers: the first layer's inputs are laid out differently from the others', so
each compiles its own graph) runs the prompt's pass and one decode step on this thread, while transformers
loads the weights on the caller's. The real decoder then calls the same compiled functions (decoder._compiled)
with inputs laid out the same way and finds the graphs compiled; anything that differs just compiles again in
the warm-up, as it did before. The stand-in takes a few hundred MB of GPU memory while it lives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any

import torch
from torch import nn

from .decoder import CompactDecoder, DecoderShape, shape_from_config
from .graphs import cache_buckets
from .prefill import PrefillGraphs

STAND_IN_LAYERS = 2
STAND_IN_VOCAB = 256  # the head is outside the compiled functions: a small one keeps the stand-in small


def random_decoder(shape: DecoderShape, *, vocab: int, max_tokens: int, dtype: torch.dtype,
                   device: torch.device | str) -> CompactDecoder:
    """A decoder of ``shape`` with random weights and no model behind it, for what needs only the shapes
    (compiling here, matmul timing in bench/prefill_gemm.py)."""
    decoder = CompactDecoder(shape, max_tokens=max_tokens, dtype=dtype, device=device)
    s = shape

    def linear(out_features: int, in_features: int, bias: bool = False) -> nn.Linear:
        layer = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        nn.init.normal_(layer.weight, std=0.02)
        return layer

    def norm() -> nn.Parameter:
        return nn.Parameter(torch.ones(s.hidden, dtype=dtype, device=device))

    # the kinds of tensor build_from gives (compiled code is guarded on them): fused q/k/v and gate/up plain
    # tensors, the o and down projections' and the norms' parameters as the model holds them
    for _ in range(s.layers):
        qkv = linear((s.heads + 2 * s.kv_heads) * s.head_dim, s.hidden, s.qkv_bias)
        decoder.qkv_weight.append(qkv.weight.detach())
        decoder.qkv_bias.append(qkv.bias.detach() if s.qkv_bias else None)
        decoder.gate_up_weight.append(linear(2 * s.intermediate, s.hidden).weight.detach())
        decoder.o.append(linear(s.hidden, s.heads * s.head_dim))
        decoder.down.append(linear(s.hidden, s.intermediate))
        decoder.norm_in.append(norm())
        decoder.norm_post.append(norm())
    decoder.norm_final = norm()
    decoder.embed = nn.Embedding(vocab, s.hidden, device=device, dtype=dtype)
    decoder.lm_head = linear(vocab, s.hidden)
    return decoder.eval()


class EarlyCompile:
    """Starts compiling at construction; ``join()`` waits for it and says how it went."""

    def __init__(self, text_config: Any, *, max_tokens: int, dtype: torch.dtype, device: str,
                 compile_settings: Any = contextlib.nullcontext) -> None:
        self.shape = dataclasses.replace(shape_from_config(text_config), layers=STAND_IN_LAYERS)
        self.max_tokens, self.dtype, self.device = max_tokens, dtype, device
        self.compile_settings = compile_settings  # a context manager factory the compiling runs under
        self.seconds: float | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="optascan-early-compile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        cuda = self.device.startswith("cuda")
        try:
            with torch.cuda.device(self.device) if cuda else contextlib.nullcontext(), self.compile_settings():
                self._compile()
                if cuda:
                    torch.cuda.synchronize()
        except Exception as err:  # noqa: BLE001 - the warm-up compiles whatever this did not
            self.error = f"{type(err).__name__}: {err}"[:300]
        self.seconds = time.perf_counter() - start

    def _compile(self) -> None:
        stand_in = random_decoder(self.shape, vocab=STAND_IN_VOCAB, max_tokens=self.max_tokens, dtype=self.dtype,
                                  device=self.device)
        stand_in.compile_layers()
        # made outside inference mode like the real decoder's tensors (the graphs are guarded on that), run in it
        # like the warm-up: the prompt's pass as PrefillGraphs runs it (its buffers, so the same strides), then
        # one decode step as DecodeLoop runs it
        prefill = PrefillGraphs(stand_in, self.device, capture=False)
        device = torch.device(self.device)
        token = torch.zeros(1, 1, dtype=torch.long, device=device)
        slot = torch.zeros(1, dtype=torch.long, device=device)
        with torch.inference_mode():
            if prefill.buckets:
                prefill._body(prefill.buckets[0])
            stand_in.step(token, slot, slot.clone(), cache_buckets(self.max_tokens)[0])

    def join(self) -> dict[str, Any]:
        """Wait for the compiling; its seconds (and error, if it failed) for the warm-up's report."""
        self._thread.join()
        return {"early_compile_s": self.seconds, **({"early_compile_error": self.error} if self.error else {})}
