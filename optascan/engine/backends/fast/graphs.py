"""The decode loop: the whole step (forward, token choice, advancing the position) replayed as a CUDA graph.

Greedy and sampled decoding each have their own graphs; sampling (temperature, top-k, top-p, seeded) runs on
the GPU from device-side parameters and a counter-based noise (``torch_sampling``), so it needs no host
round trip and gives the same tokens as the eager path for the same seed.

No host synchronisation per token: each step's token is copied to pinned host memory asynchronously and read
one step later, so stop checks (EOS, stop strings, cancel, max_tokens) lag by at most one step; a token computed
past the stop is discarded, never emitted. Off CUDA the same static step runs eagerly (that is what CI checks).

Attention reads only a bucket of the cache (256, 512, … slots, up to its size): one graph per bucket and mode,
all captured at load, and the host picks the graph for each step from the step count it already knows. A short
reply to a short prompt then reads 256 slots of keys and values per layer instead of all 8,192.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..base import Sampling
from ..torch_sampling import gumbel_noise, sample_from, sampling_tensors, token_hashes
from .decoder import CompactDecoder

# greedy and sample choose the next token inside the graph; logits only runs the step and leaves its logits for
# the host (grammar-constrained decoding masks them with the grammar's next-token bitmask first)
MODES = ("greedy", "sample", "logits")
WARM_STEPS = 2  # each mode and bucket is warmed by this many steps from cache slot 0 before its capture


class DecodeLoop:
    def __init__(self, decoder: CompactDecoder, device: str) -> None:
        self.decoder = decoder
        self.use_graph = device.startswith("cuda")
        dev = torch.device(device)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.index = torch.zeros(1, dtype=torch.long, device=dev)
        self.rope = torch.zeros(1, dtype=torch.long, device=dev)
        vocab = decoder.lm_head.weight.shape[0]
        self.bias = torch.zeros(1, vocab, dtype=torch.float32, device=dev)  # -inf on banned ids (ignore_eos)
        # sampling parameters, set per request; the step counter keys the noise
        self.hashes = token_hashes(vocab, dev)
        self.temperature = torch.ones(1, 1, device=dev)
        self.top_k = torch.full((1, 1), vocab, dtype=torch.long, device=dev)
        self.top_p = torch.ones(1, 1, device=dev)
        self.seed = torch.zeros(1, dtype=torch.long, device=dev)
        self.step_number = torch.zeros(1, dtype=torch.long, device=dev)
        self.logits = torch.zeros(1, vocab, dtype=torch.float32, device=dev)  # the logits mode's output
        self.buckets = cache_buckets(decoder.max_tokens)
        self.graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        self.warmup_parts: dict[str, float] = {}  # seconds: first step (compiling), other warm steps, capture
        if self.use_graph:
            self.host = torch.zeros(2, dtype=torch.long, pin_memory=True)  # double buffer for the async copies
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self._capture()

    def _body(self, mode: str, length: int) -> None:
        logits = self.decoder.step(self.token, self.index, self.rope, length).float()
        if mode == "logits":  # the host masks banned ids itself (choose_token)
            self.logits.copy_(logits)
        else:
            logits = logits + self.bias
            if mode == "greedy":
                chosen = logits.argmax(-1)
            else:
                noise = gumbel_noise(self.seed, self.step_number, self.hashes)
                chosen = sample_from(logits, self.temperature, self.top_k, self.top_p, noise)
            self.token.copy_(chosen.view(1, 1))
            self.step_number.add_(1)
        self.index.add_(1)
        self.rope.add_(1)

    def _capture(self) -> None:
        """One step per mode and bucket, warmed twice (from slot 0) and captured. Done at load."""
        # the warm steps write their keys and values into the first WARM_STEPS slots (a capture runs nothing):
        # only those are kept and put back, not a copy of the whole cache (LLaVA's 2 GB, its peak memory's excess)
        cache = self.decoder.k_cache, self.decoder.v_cache
        saved = [part[..., :WARM_STEPS, :].clone() for part in cache]
        self.graphs, self.warmup_parts = warm_and_capture(
            [(mode, length) for mode in MODES for length in self.buckets], lambda key: self._body(*key),
            ("first_step_s", "other_steps_s", "capture_s"), before_warm=lambda _: self.index.zero_(),
            warm_runs=WARM_STEPS)
        for part, kept in zip(cache, saved, strict=True):
            part[..., :WARM_STEPS, :].copy_(kept)

    def logits_after(self, token: int, index: int, rope_position: int) -> torch.Tensor:
        """The logits [1, vocab] after ``token`` at cache slot ``index`` (one step, no choice: the caller
        masks and chooses). Returns the loop's own buffer, which the next step overwrites."""
        self.token.fill_(token)
        self.index.fill_(index)
        self.rope.fill_(rope_position)
        if self.use_graph:
            self.graphs["logits", self.bucket(index)].replay()
        else:
            self._body("logits", self.bucket(index))
        return self.logits

    def bucket(self, slot: int) -> int:
        """The smallest bucket that holds cache slot ``slot``."""
        return next(b for b in self.buckets if b > slot)

    def run(self, first_token: int, index: int, rope_position: int, steps: int, cancelled: Callable[[], bool],
            banned: list[int] | None = None, sampling: Sampling | None = None) -> Iterator[int]:
        """Tokens after ``first_token`` (already emitted, sitting at cache slot ``index``), up to ``steps``:
        greedy, or drawn with ``sampling``'s parameters (the first token was draw 0 of its seed)."""
        self.bias.zero_()
        if banned:
            self.bias[0, banned] = float("-inf")
        mode = "greedy" if sampling is None else "sample"
        if sampling is not None:  # into the tensors the graphs read, by the sampler's own rules
            for name, value in sampling_tensors(sampling, self.bias.shape[-1], self.bias.device).items():
                getattr(self, name).copy_(value)
        self.step_number.fill_(1)
        self.token.fill_(first_token)
        self.index.fill_(index)
        self.rope.fill_(rope_position)
        steps = min(steps, self.decoder.max_tokens - index)
        if not self.use_graph:
            for step in range(steps):
                if cancelled():
                    return
                self._body(mode, self.bucket(index + step))
                yield int(self.token)
            return
        pending: int | None = None  # the step whose token is on its way to the host
        for step in range(steps):
            if cancelled():
                break
            self.graphs[mode, self.bucket(index + step)].replay()
            slot = step % 2
            self.host[slot:slot + 1].copy_(self.token.view(1), non_blocking=True)
            self.events[slot].record()
            if pending is not None:
                self.events[pending % 2].synchronize()
                yield int(self.host[pending % 2])
            pending = step
        if pending is not None:
            self.events[pending % 2].synchronize()
            yield int(self.host[pending % 2])


def warm_and_capture(keys: list[Any], run: Callable[[Any], None], names: tuple[str, str, str], *,
                     before_warm: Callable[[Any], None] | None = None,
                     warm_runs: int = 1) -> tuple[dict[Any, torch.cuda.CUDAGraph], dict[str, float]]:
    """Run each key's body ``warm_runs`` times on a side stream (allocator, kernel selection, any compilation:
    nothing of that may happen inside a capture), then capture one CUDA graph per key, all from one memory pool
    (they never run at once). Returns the graphs and the warm-up's parts under ``names``: the first run
    (compiling), the other warm runs, the captures."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    marks = [time.perf_counter()]
    with torch.cuda.stream(stream), torch.inference_mode():
        for key in keys:
            if before_warm is not None:
                before_warm(key)
            for _ in range(warm_runs):
                run(key)
                if len(marks) == 1:
                    stream.synchronize()
                    marks.append(time.perf_counter())
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    marks.append(time.perf_counter())
    pool = torch.cuda.graph_pool_handle()
    graphs = {}
    for key in keys:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
            run(key)
        graphs[key] = graph
    torch.cuda.synchronize()
    marks.append(time.perf_counter())
    return graphs, intervals(names, marks)


def intervals(names: tuple[str, ...], marks: list[float]) -> dict[str, float]:
    """The seconds between consecutive time marks, by name."""
    return {name: end - start for name, (start, end) in zip(names, itertools.pairwise(marks), strict=True)}


def cache_buckets(max_tokens: int, smallest: int = 256) -> list[int]:
    """256, 512, 1024, … below ``max_tokens``, then ``max_tokens`` itself."""
    buckets = []
    size = smallest
    while size < max_tokens:
        buckets.append(size)
        size *= 2
    return [*buckets, max_tokens]
