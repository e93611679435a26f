"""The fast backend: transformers for the processor and the vision tower, our CompactDecoder for the language
model (static KV cache, fused weights, our own decode loop). Same events, cancel and errors as the HF backend.

The prefill inputs are taken from transformers itself: the model's multimodal forward runs up to the language
model, where a pre-hook captures the merged embeddings (image features already placed) and the position ids
(Qwen2-VL's M-RoPE ones included) and stops it. So the image path is exactly the reference one, in every
transformers version, and only the language model is ours.

Greedy decoding runs the static decode step (``decoder.step``) in a loop that, on CUDA, replays it as one captured
CUDA graph per token with asynchronous token copies (``graphs.py``); sampling runs the same decoder step by step
with our seeded sampler. CPU runs everything eagerly: that is what CI checks (logits and tokens equal to
transformers); the CUDA graph path's checks are tests/gpu/check_fast.py, run on an H100 through the device tool
(the first run, before the buckets and the sampled graphs, passed cancel and EOS but not greedy agreement).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ....errors import ModelLoadError
from ...cancel import CancelToken, check
from ...choice import FAST_FAMILIES
from ..base import OnToken, Prepared, Sampling
from ..hf import HFBackend
from ..torch_sampling import choose_token
from .decoder import CompactDecoder, build_from
from .graphs import DecodeLoop


class _Captured(Exception):
    def __init__(self, embeds: torch.Tensor, positions: torch.Tensor | None) -> None:
        super().__init__("captured")
        self.embeds, self.positions = embeds, positions


class FastBackend(HFBackend):
    name = "fast"

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str | None = None,
                 memory_fraction: float = 0.9, cache_tokens: int = 8192, compile_step: bool | None = None) -> None:
        super().__init__(path, device=device, dtype=dtype, memory_fraction=memory_fraction)
        if self.model_type not in FAST_FAMILIES:
            raise ModelLoadError(f"the fast engine does not support {self.model_type!r} models yet",
                                 hint="use engine='hf' (or 'auto', which falls back to it)")
        self.reuses_prefix = False  # the compact decoder keeps its own cache
        text_config = self.model.config.get_text_config()
        self.cache_tokens = min(cache_tokens, self.context_length or cache_tokens)
        # the KV cache is allocated here, once: requests are bounded by its length (the spine refuses longer
        # prompts and caps replies, with the reason in the result), not by free memory at request time
        self.context_length = self.cache_tokens
        self.decoder: CompactDecoder = build_from(self.language_model, self.model.lm_head, text_config,
                                                  max_tokens=self.cache_tokens)
        # torch.compile of the one-token step: off unless asked for (OPTASCAN_FAST_COMPILE=1) until GPU runs
        # show it pays for its compile time at load
        if compile_step if compile_step is not None else os.environ.get("OPTASCAN_FAST_COMPILE") == "1":
            self.decoder.compile_one_token_step()
        self._capturing = False
        self.language_model.register_forward_pre_hook(self._capture, with_kwargs=True)
        start = time.perf_counter()
        self.decode_loop = DecodeLoop(self.decoder, self.device)  # CUDA graph capture happens here, at load
        self.warmup_s = time.perf_counter() - start

    # --- generation ------------------------------------------------------------------------------------
    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        if sampling.json_schema:  # the grammar path stays on transformers' generate (same tokens, slower)
            return super().generate(prepared, sampling, cancel, on_token)
        self._cancel, self._stage, self._language_calls = cancel, "prefill", 0
        try:
            with torch.inference_mode():
                embeds, positions = self._prefill_inputs(prepared.inputs)
                n = embeds.shape[1]
                decoder = self.decoder
                check(cancel)
                logits = decoder(embeds, 0, *decoder.rotary(positions))
                next_position = int(positions.max()) + 1  # Qwen2-VL: text after an image continues from its end
                self._stage = "decode"
                banned = sorted(self.eos_token_ids) if sampling.ignore_eos else None
                if sampling.repetition_penalty == 1.0:  # greedy or sampled: the captured decode loop
                    return self._loop(logits, n, next_position, sampling, banned, cancel, on_token)
                # the repetition penalty needs every token so far: step by step, eagerly
                history = prepared.inputs["input_ids"]
                for step in range(sampling.max_tokens):
                    token = choose_token(logits[:, -1].float(), history, sampling, step, banned,
                                         self.decode_loop.hashes)
                    token_id = int(token)
                    if not on_token(token_id) or (token_id in self.eos_token_ids and not sampling.ignore_eos):
                        return
                    if step + 1 == sampling.max_tokens:
                        return
                    check(cancel)
                    history = torch.cat([history, token.view(1, 1)], dim=1)
                    position = torch.tensor([next_position + step], device=self.device)
                    logits = decoder(decoder.embed(token.view(1, 1)), n + step, *decoder.rotary(position))
        finally:
            self._cancel = None

    def _loop(self, logits: torch.Tensor, n: int, next_position: int, sampling: Sampling,
              banned: list[int] | None, cancel: CancelToken, on_token: OnToken) -> None:
        """The first token from the prefill's logits, the rest from the decode loop (one CUDA graph replay per
        token on CUDA)."""
        first = int(choose_token(logits[:, -1].float(), logits.new_zeros(1, 0, dtype=torch.long), sampling, 0,
                                 banned, self.decode_loop.hashes))
        if not on_token(first) or (first in self.eos_token_ids and not sampling.ignore_eos):
            return
        sampled = sampling if sampling.temperature > 0.0 else None
        for token_id in self.decode_loop.run(first, n, next_position, sampling.max_tokens - 1,
                                             lambda: cancel.cancelled, banned, sampled):
            check(cancel)
            if not on_token(token_id) or (token_id in self.eos_token_ids and not sampling.ignore_eos):
                return

    def request_budget_bytes(self) -> int | None:
        return None  # see context_length above

    def _capture(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self._capturing and kwargs.get("inputs_embeds") is not None:
            raise _Captured(kwargs["inputs_embeds"], kwargs.get("position_ids"))

    def _prefill_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(merged input embeddings [1, n, hidden], positions [n] or M-RoPE's [3, n]) exactly as transformers
        would hand them to the language model."""
        if self.language_model is self.model.model:  # a text-only causal LM: nothing to merge
            ids = inputs["input_ids"]
            return self.decoder.embed(ids), torch.arange(ids.shape[1], device=ids.device)
        self._capturing = True
        try:
            self.model.model(**inputs, use_cache=False)
        except _Captured as captured:
            embeds, positions = captured.embeds, captured.positions
        else:
            raise RuntimeError("the language model was never reached")
        finally:
            self._capturing = False
        n = embeds.shape[1]
        if positions is None:
            positions = torch.arange(n, device=embeds.device)
        elif positions.dim() == 3:  # [3 or 4, batch, n]; transformers 5.24 puts text positions first in a 4th row
            positions = positions[-3:, 0]
        else:
            positions = positions[0]
        return embeds, positions
