"""The prompt's pass through our decoder (prefill) replayed as a CUDA graph, one per prompt-length bucket.

Why: the prefill is 36 layers × (the layer's kernels, the cache writes, attention), and on an H100
the host takes longer to launch them than the GPU to run them: the 3B's 1,023-token prefill ran its kernels in
11 ms and took 18–19 ms (bench/results/profile_fast_step-*.json). A graph launches them all at once.

A prompt is padded to the next bucket (every 128 tokens up to 1,024, then every 256 up to 2,048: a padded token
costs as much as a real one, and one photo's prompt is often under 1,024 tokens: the benchmark's 620-token
LLaVA-1.5 prompt went to the 768 bucket with 256-token steps, 24 % more work than the prompt itself, and now to
640, 3 %: its prefill took 15.5 ms on an H100 at 768 and 14.0 ms at 640,
bench/results/fast_decode-h100-llava-1.5-7b-full-vision-2026-11-26*.json): the attention is causal, so the real
tokens never see the padding; the padding's keys and values land in cache slots after the prompt, which decoding
overwrites before it reads them (a decode step writes its slot, then attends up to it); the logits come from the
last real token, picked on the device. Longer prompts, and any off CUDA, run eagerly: from about
2,000 tokens the GPU's time exceeds the host's launch time, so a graph would save little, and each bucket's capture
(a prefill at its length, twice) is warm-up time.
"""

from __future__ import annotations

import torch

from .decoder import CompactDecoder
from .graphs import warm_and_capture

FINE, FINE_UNTIL = 128, 1024  # bucket spacing for short prompts: at most 127 padded tokens
STEP = 256  # above FINE_UNTIL: each bucket is a capture (two prefills) at load, so fewer of them
LONGEST = 2048  # longer prompts' prefills are long enough for the GPU, not the host, to set their time


def prefill_buckets(max_tokens: int) -> list[int]:
    buckets = [*range(FINE, FINE_UNTIL + 1, FINE), *range(FINE_UNTIL + STEP, LONGEST + 1, STEP)]
    return [bucket for bucket in buckets if bucket <= max_tokens]


class PrefillGraphs:
    def __init__(self, decoder: CompactDecoder, device: str, capture: bool = True) -> None:
        self.decoder = decoder
        self.buckets = prefill_buckets(decoder.max_tokens)
        dev = torch.device(device)
        longest = self.buckets[-1] if self.buckets else 0
        rope_rows = (3,) if decoder.shape.mrope_section else ()
        # inference tensors, like every tensor the layers make from them: compiled code is guarded on the kind,
        # so a first layer fed from an ordinary buffer compiled its own second graph of the prompt's code
        with torch.inference_mode():
            self.embeds = torch.zeros(1, longest, decoder.embed.weight.shape[1], dtype=decoder.k_cache.dtype,
                                      device=dev)
            self.positions = torch.zeros(*rope_rows, longest, dtype=torch.long, device=dev)
            self.last = torch.zeros(1, dtype=torch.long, device=dev)
            self.logits = torch.zeros(1, 1, decoder.lm_head.weight.shape[0], dtype=decoder.k_cache.dtype,
                                      device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.warmup_parts: dict[str, float] = {}  # seconds: compile (first bucket), other buckets, capture
        if capture and self.buckets:
            self._capture()

    def _body(self, bucket: int) -> None:
        cos, sin = self.decoder.rotary(self.positions[..., :bucket])
        self.logits.copy_(self.decoder(self.embeds[:, :bucket], 0, cos, sin, last=self.last))

    def _capture(self) -> None:
        """One graph per bucket, each warmed once (any compilation for the new length). At load; the cache is
        garbage then."""
        self.graphs, self.warmup_parts = warm_and_capture(self.buckets, self._body,
                                                          ("first_bucket_s", "other_buckets_s", "capture_s"))

    def run(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        """The last prompt token's logits [1, 1, vocab] for ``embeds`` [1, n, hidden] at ``positions`` ([n] or
        M-RoPE's [3, n]) from cache slot 0, through the bucket's graph; None where no bucket holds n."""
        with torch.inference_mode():  # its buffers are inference tensors
            return self._run(embeds, positions)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        n = embeds.shape[1]
        bucket = next((b for b in self.buckets if b >= n), None)
        if bucket is None:
            return None
        self.embeds[:, :n].copy_(embeds)
        self.embeds[:, n:bucket].zero_()
        self.positions[..., :n].copy_(positions)
        self.positions[..., n:bucket] = positions[..., -1:] + 1  # any position would do: nothing real sees them
        self.last.fill_(n - 1)
        if self.graphs:
            self.graphs[bucket].replay()
        else:  # not captured (off CUDA: the tests check the padding this way)
            self._body(bucket)
        return self.logits.clone()
