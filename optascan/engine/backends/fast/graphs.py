"""Greedy decoding with the whole step (forward + argmax + advancing the position) replayed as one CUDA graph.

No host synchronisation per token: each step's token is copied to pinned host memory asynchronously and read
one step later, so stop checks (EOS, stop strings, cancel, max_tokens) lag by at most one step; a token computed
past the stop is discarded, never emitted. Off CUDA the same static step runs eagerly (that is what CI checks).

Attention reads only a bucket of the cache (256, 512, … slots, up to its size): one graph per bucket, all
captured at load, and the host picks the graph for each step from the step count it already knows. A short
reply to a short prompt then reads 256 slots of keys and values per layer instead of all 8,192.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .decoder import CompactDecoder


class GreedyLoop:
    def __init__(self, decoder: CompactDecoder, device: str) -> None:
        self.decoder = decoder
        self.use_graph = device.startswith("cuda")
        dev = torch.device(device)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.index = torch.zeros(1, dtype=torch.long, device=dev)
        self.rope = torch.zeros(1, dtype=torch.long, device=dev)
        vocab = decoder.lm_head.weight.shape[0]
        self.bias = torch.zeros(1, vocab, dtype=torch.float32, device=dev)  # -inf on banned ids (ignore_eos)
        self.buckets = cache_buckets(decoder.max_tokens)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if self.use_graph:
            self.host = torch.zeros(2, dtype=torch.long, pin_memory=True)  # double buffer for the async copies
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self._capture()

    def _body(self, length: int) -> None:
        logits = self.decoder.step(self.token, self.index, self.rope, length).float() + self.bias
        self.token.copy_(logits.argmax(-1).view(1, 1))
        self.index.add_(1)
        self.rope.add_(1)

    def _capture(self) -> None:
        """Warm up on a side stream (allocator and kernel selection), then capture one step per bucket, all
        from one memory pool (they never run at once). Done at load."""
        saved = (self.decoder.k_cache.clone(), self.decoder.v_cache.clone())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for length in self.buckets:
                for _ in range(2):
                    self._body(length)
        torch.cuda.current_stream().wait_stream(stream)
        pool = torch.cuda.graph_pool_handle()
        for length in self.buckets:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
                self._body(length)
            self.graphs[length] = graph
        self.decoder.k_cache.copy_(saved[0])  # the warm-up wrote into the cache: leave it as it was
        self.decoder.v_cache.copy_(saved[1])

    def bucket(self, slot: int) -> int:
        """The smallest bucket that holds cache slot ``slot``."""
        return next(b for b in self.buckets if b > slot)

    def run(self, first_token: int, index: int, rope_position: int, steps: int, cancelled: Callable[[], bool],
            banned: list[int] | None = None) -> Iterator[int]:
        """Tokens after ``first_token`` (already emitted, sitting at cache slot ``index``), up to ``steps``."""
        self.bias.zero_()
        if banned:
            self.bias[0, banned] = float("-inf")
        self.token.fill_(first_token)
        self.index.fill_(index)
        self.rope.fill_(rope_position)
        steps = min(steps, self.decoder.max_tokens - index)
        if not self.use_graph:
            for step in range(steps):
                if cancelled():
                    return
                self._body(self.bucket(index + step))
                yield int(self.token)
            return
        pending: int | None = None  # the step whose token is on its way to the host
        for step in range(steps):
            if cancelled():
                break
            self.graphs[self.bucket(index + step)].replay()
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


def cache_buckets(max_tokens: int, smallest: int = 256) -> list[int]:
    """256, 512, 1024, … below ``max_tokens``, then ``max_tokens`` itself."""
    buckets = []
    size = smallest
    while size < max_tokens:
        buckets.append(size)
        size *= 2
    return [*buckets, max_tokens]
