"""The fast backend: transformers for the processor and the vision tower, our CompactDecoder for the language
model (static KV cache, fused weights, our own decode loop). Same events, cancel and errors as the HF backend.

The prefill inputs are taken from transformers itself: the model's multimodal forward runs up to the language
model, where a pre-hook captures the merged embeddings (image features already placed) and the position ids
(Qwen2-VL's M-RoPE ones included) and stops it. So the image path is transformers' own code, in every
transformers version, and only the language model is ours. Two changes to the towers' speed, not their results:
Qwen2-VL-family towers attend within all windows in one call and Qwen2.5-VL's get padded MLPs and one-kernel
norms (vision.py; the same bits as transformers on the CPU); LLaVA's can be replayed as a CUDA graph
(vision_graph.py; CUDA only).

Greedy and sampled decoding run the static decode step (``decoder.step``), token choice included, in a loop that,
on CUDA, replays it as one captured CUDA graph per token with asynchronous token copies (``graphs.py``). A JSON
schema (xgrammar's bitmask) or a repetition penalty needs the host between steps: the step is still a graph
replay, the choice is made eagerly after it. CPU runs everything eagerly: that is what CI checks (logits and
tokens equal to transformers); the CUDA graph path's checks are tests/gpu/check_fast.py, run through the device
tool (9 of 9 passed on an H100: tests/gpu/results/fast_checks-h100-2026-11-26-at-62c8478.json).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ....errors import ModelLoadError
from ...cancel import CancelToken, check
from ...choice import FAST_FAMILIES
from ..base import OnToken, Prepared, Sampling
from ..hf import HFBackend
from ..torch_sampling import choose_token, sampling_tensors
from . import elementwise
from .decoder import CompactDecoder, build_from
from .graphs import DecodeLoop
from .prefill import PrefillGraphs
from .vision import fuse_rms_norms, pad_mlp_widths, use_packed_attention
from .vision_graph import GraphedTower, start_tower_early


class _Captured(Exception):
    def __init__(self, embeds: torch.Tensor, positions: torch.Tensor | None) -> None:
        super().__init__("captured")
        self.embeds, self.positions = embeds, positions


PACKED_VISION_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


class FastBackend(HFBackend):
    name = "fast"
    # images are resized, normalised and cut into patches on the GPU: on the CPU that, and copying the float32
    # patches over (19 MB for a 1024x768 photo on Qwen2-VL), was a third of the time to first token
    images_on_device = True

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str | None = None,
                 memory_fraction: float = 0.9, cache_tokens: int = 8192, compile_step: bool | None = None) -> None:
        super().__init__(path, device=device, dtype=dtype, memory_fraction=memory_fraction)
        if self.model_type not in FAST_FAMILIES:
            raise ModelLoadError(f"the fast engine does not support {self.model_type!r} models yet",
                                 hint="use engine='hf' (or 'auto', which falls back to it)")
        self.reuses_prefix = False  # the compact decoder keeps its own cache
        # Qwen2-VL-family vision towers: windowed attention in one call per layer, not one per window (vision.py;
        # OPTASCAN_FAST_VISION=loop keeps transformers' tower as it is, for comparison)
        inner = getattr(self.model, "model", None)
        vision_tower = getattr(self.model, "visual", None) or getattr(inner, "visual", None)
        self.packed_vision = self.model_type in PACKED_VISION_FAMILIES and vision_tower is not None \
            and os.environ.get("OPTASCAN_FAST_VISION") != "loop" and use_packed_attention(vision_tower)
        # and its MLPs widened to cuBLAS-friendly widths (Qwen2.5-VL's 3,420: zero padding, the same results) and
        # its norms one kernel each
        if self.packed_vision:
            pad_mlp_widths(vision_tower)
            fuse_rms_norms(vision_tower)
        text_config = self.model.config.get_text_config()
        self.cache_tokens = min(cache_tokens, self.context_length or cache_tokens)
        # the KV cache is allocated here, once: requests are bounded by its length (the spine refuses longer
        # prompts and caps replies, with the reason in the result), not by free memory at request time
        self.context_length = self.cache_tokens
        self.decoder: CompactDecoder = build_from(self.language_model, self.model.lm_head, text_config,
                                                  max_tokens=self.cache_tokens)
        # torch.compile of the layer code: off where our elementwise kernels run (CUDA with Triton: the same speed,
        # without compiling's 8-13 s of a cold warm-up on an H100 host, bench/results/fast_warmup-*); on for CUDA
        # without Triton; off elsewhere, where compiling costs more than it gains. OPTASCAN_FAST_COMPILE=1 or 0
        # overrides (1: inductor's kernels instead of ours).
        if compile_step is None:
            flag = os.environ.get("OPTASCAN_FAST_COMPILE")
            compile_step = flag == "1" if flag in ("0", "1") else \
                self.device.startswith("cuda") and not elementwise.enabled(self.device)
        if compile_step:
            self.decoder.compile_layers()
        self._capturing = False
        self.language_model.register_forward_pre_hook(self._capture, with_kwargs=True)
        start = time.perf_counter()
        with compiling_in_process():
            self._warm_up(compile_step)
        self.warmup_s = time.perf_counter() - start
        # where the warm-up went (the benchmark reports it): compiling shows in each first run
        self.warmup_parts = {**{f"prefill_{k}": v for k, v in getattr(self.prefill_graphs, "warmup_parts", {}).items()},
                             **{f"decode_{k}": v for k, v in self.decode_loop.warmup_parts.items()},
                             **getattr(self.vision_graph, "warmup_parts", {})}

    def _warm_up(self, compile_step: bool) -> None:
        """Everything that compiles or captures, at load: the prompt's graphs, the decode loop's, LLaVA's tower."""
        # the prompt's pass: CUDA graphs per length bucket on CUDA (OPTASCAN_FAST_PREFILL_GRAPHS=0: eager, for
        # comparison), captured at load with any compiling, not in the first request's time to first token
        self.prefill_graphs: PrefillGraphs | None = None
        if self.device.startswith("cuda") and os.environ.get("OPTASCAN_FAST_PREFILL_GRAPHS") != "0":
            self.prefill_graphs = PrefillGraphs(self.decoder, self.device)
        elif compile_step:
            self._warm_prefill()
        self.decode_loop = DecodeLoop(self.decoder, self.device)  # CUDA graph capture happens here, at load
        # LLaVA's CLIP tower (one input shape) as a CUDA graph: 12 → 3 ms of an H100's time to first token
        # (vision_graph.py); OPTASCAN_FAST_VISION_GRAPH=0 keeps it eager, for comparison
        self.vision_graph: GraphedTower | None = None
        if self.model_type == "llava" and self.device.startswith("cuda") \
                and os.environ.get("OPTASCAN_FAST_VISION_GRAPH") != "0":
            self.vision_graph = GraphedTower(self.model.model.vision_tower)
            start_tower_early(self.processor.image_processor, self.vision_graph, self.dtype)
            self._warm_vision()
            self.vision_graph.frozen = True  # no captures during requests

    def _warm_vision(self) -> None:
        """A blank photo through the processor and the vision path, so the tower's graph is captured at load."""
        from PIL import Image

        from ....types import Request
        from ...conversation import to_conversation

        image = Image.new("RGB", (336, 336))
        prepared = self.prepare(to_conversation(Request(prompt="warm-up", images=[image])), [image])
        with torch.inference_mode():
            self._prefill_inputs(prepared.inputs)

    def _warm_prefill(self) -> None:
        """A 16-token prefill of zeros (its cache slots are overwritten by the next prompt's)."""
        decoder = self.decoder
        with torch.inference_mode():
            embeds = torch.zeros(1, 16, decoder.embed.weight.shape[1], dtype=decoder.k_cache.dtype,
                                 device=decoder.k_cache.device)
            decoder(embeds, 0, *decoder.rotary(decoder.prompt_positions(16)))

    # --- generation ------------------------------------------------------------------------------------
    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        banned = self.banned_ids(sampling)
        self._cancel, self._stage, self._language_calls = cancel, "prefill", 0
        try:
            with torch.inference_mode():
                logits, n, next_position = self.prefill(prepared.inputs, cancel)
                self._stage = "decode"
                if sampling.repetition_penalty == 1.0 and not sampling.json_schema:
                    return self._loop(logits, n, next_position, sampling, banned, cancel, on_token)
                return self._stepwise(logits, prepared.inputs["input_ids"], n, next_position, sampling, banned,
                                      cancel, on_token)
        finally:
            self._cancel = None

    def prefill(self, inputs: dict[str, Any], cancel: CancelToken | None = None) -> tuple[torch.Tensor, int, int]:
        """The prompt through the vision path and our decoder, from cache slot 0: (the last position's logits
        [1, 1, vocab], the prompt's length = the next cache slot, the next rotary position)."""
        embeds, positions = self._prefill_inputs(inputs)
        if cancel is not None:
            check(cancel)
        logits = self.prefill_graphs.run(embeds, positions) if self.prefill_graphs is not None else None
        if logits is None:  # no graphs (off CUDA), or a prompt longer than their buckets
            logits = self.decoder(embeds, 0, *self.decoder.rotary(positions))
        # Qwen2-VL: text after an image continues from the image's last position, not from the token count
        return logits, embeds.shape[1], int(positions.max()) + 1

    def _stepwise(self, logits: torch.Tensor, prompt_ids: torch.Tensor, n: int, next_position: int,
                  sampling: Sampling, banned: list[int] | None, cancel: CancelToken, on_token: OnToken) -> None:
        """Token by token with the choice made between steps: for a JSON schema (xgrammar's next-token bitmask
        masks the logits, as on the transformers path) or a repetition penalty (it needs every token so far).
        Each step is still one graph replay (the loop's logits mode); the host waits for each token."""
        matcher = bitmask = None
        if sampling.json_schema:
            import xgrammar

            matcher = xgrammar.GrammarMatcher(self._compiled_grammar(sampling.json_schema))
            bitmask = xgrammar.allocate_token_bitmask(1, logits.shape[-1])
        loop = self.decode_loop
        params = sampling_tensors(sampling, logits.shape[-1], self.device) if sampling.temperature > 0 else None
        history = prompt_ids
        scores = logits[:, -1].float()
        for step in range(sampling.max_tokens):
            if matcher is not None:
                if matcher.is_terminated():
                    return
                matcher.fill_next_token_bitmask(bitmask)
                xgrammar.apply_token_bitmask_inplace(scores, bitmask.to(scores.device))
            token = choose_token(scores, history, sampling, step, banned, loop.hashes, params)
            token_id = int(token)
            if matcher is not None:
                matcher.accept_token(token_id)
            if not on_token(token_id) or (token_id in self.eos_token_ids and not sampling.ignore_eos):
                return
            if step + 1 == sampling.max_tokens or n + step + 1 >= self.decoder.max_tokens:
                return
            check(cancel)
            if sampling.repetition_penalty != 1.0:
                history = torch.cat([history, token.view(1, 1)], dim=1)
            scores = loop.logits_after(token_id, n + step, next_position + step)  # masked in place: a scratch buffer

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

    def close(self) -> None:
        # our decoder holds views of the weights, the KV cache and the graphs' memory: all go with the model,
        # even where the engine object itself lives on (a variable left bound after ``with load(...)``)
        if self.vision_graph is not None:
            self.vision_graph.release()
            self.processor.image_processor.__dict__.pop("preprocess", None)
        self.decoder = self.decode_loop = self.prefill_graphs = self.vision_graph = None  # type: ignore[assignment]
        super().close()

    def request_budget_bytes(self) -> int | None:
        return None  # see context_length above

    def _to_device(self, value: Any) -> Any:
        moved = super()._to_device(value)
        if self.vision_graph is not None:  # pixels the tower was started on, now in the model's dtype
            self.vision_graph.follow(value, moved)
        return moved

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


@contextlib.contextmanager
def compiling_in_process() -> Iterator[None]:
    """torch.compile's kernels built in this process one after another, not in inductor's worker pool: a cold
    warm-up took 12.4 s that way against 14.0 s with the pool on one H100 host, 13.8 against 15.7 s on another
    (bench/results/fast_warmup-h100-qwen2.5-vl-3b-*): the pool's start-up and hand-offs cost more than parallel
    builds of a few dozen small kernels save. Only around our warm-up; TORCHINDUCTOR_COMPILE_THREADS, where set,
    is left to decide."""
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ:
        yield
        return
    from torch._inductor import config

    with config.patch(compile_threads=1):
        yield
