"""Token choice on the device: repetition penalty, temperature, top-k, top-p, seeded sampling.

One function so every backend samples alike; the per-request ``torch.Generator`` makes a seed give the
same text on every path, whatever other requests run in between.
"""

from __future__ import annotations

import torch

from .base import Sampling


def choose_token(scores: torch.Tensor, seen_ids: torch.Tensor, sampling: Sampling,
                 generator: torch.Generator | None, banned: list[int] | None = None) -> torch.Tensor:
    """``scores``: (batch, vocab) logits; ``seen_ids``: (batch, n) ids so far. Returns (batch,) ids."""
    scores = scores.float()
    if sampling.repetition_penalty != 1.0 and seen_ids.numel():
        # As in CTRL / transformers: shrink the logits of every token already present.
        seen = torch.gather(scores, 1, seen_ids)
        seen = torch.where(seen < 0, seen * sampling.repetition_penalty, seen / sampling.repetition_penalty)
        scores = scores.scatter(1, seen_ids, seen)
    if banned:
        scores[:, banned] = -float("inf")
    if sampling.temperature == 0.0:
        return scores.argmax(dim=-1)
    scores = scores / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.shape[-1]:
        kth = torch.topk(scores, sampling.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_scores.softmax(dim=-1) >= sampling.top_p  # keep the first that crosses
        sorted_scores = sorted_scores.masked_fill(drop, -float("inf"))
        scores = torch.full_like(scores, -float("inf")).scatter(1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
