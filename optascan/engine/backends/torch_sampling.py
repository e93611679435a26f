"""Token choice on the device: repetition penalty, temperature, top-k, top-p, seeded sampling.

One function so every backend samples alike. Sampling is Gumbel-max (argmax of logits / T plus Gumbel noise,
an exact draw from the softmax) with counter-based noise: a hash of (seed, step, token id), so the draw needs
no random-number state, a seed gives the same text on every path whatever runs in between, and the fast
engine can replay the whole step, sampling included, as a CUDA graph with the seed and step as device tensors.
"""

from __future__ import annotations

import torch

from .base import Sampling

_MASK = 0xFFFFFFFF  # the hash works on 32-bit values held in int64 (products stay below 2**63)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


def token_hashes(vocab: int, device: torch.device | str) -> torch.Tensor:
    """Per-token-id hashes, computed once per vocabulary and device."""
    return _hash32(torch.arange(vocab, dtype=torch.long, device=device) + 0x9E3779B9)


def gumbel_noise(seed: torch.Tensor, step: torch.Tensor, hashes: torch.Tensor) -> torch.Tensor:
    """Gumbel noise [1, vocab] for request ``seed`` at generation ``step`` (int64 tensors of shape [1])."""
    # the step is hashed before it meets the seed: a plain XOR would let two seeds replay each other's draws
    key = _hash32(_hash32((seed & _MASK) ^ _hash32((seed >> 32) & _MASK)) ^ _hash32((step + 0x9E3779B9) & _MASK))
    bits = _hash32(hashes ^ key)
    # 23 bits + 0.5, over 2**23: exact in float32 and strictly inside (0, 1) (with 24 bits the top value rounds
    # to 1.0, its noise is +inf, and that token wins even when masked)
    uniform = ((bits >> 9).float() + 0.5) / 8388608.0
    return -torch.log(-torch.log(uniform))[None]


def sample_from(scores: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
    """One draw per row of ``scores`` [batch, vocab] (float32, banned ids already -inf), with device-side
    parameters of shape [batch, 1]: temperature > 0, top_k (vocab size = off), top_p (1 = off). No branch
    depends on a value, so the same code runs eagerly and inside a captured graph."""
    scores = scores / temperature
    ordered, order = torch.sort(scores, descending=True, dim=-1)
    kth = ordered.gather(1, (top_k - 1).clamp(0, scores.shape[-1] - 1))
    ordered = ordered.masked_fill(ordered < kth, -float("inf"))  # ties with the k-th stay in
    probs = ordered.softmax(dim=-1)
    drop = (probs.cumsum(dim=-1) - probs >= top_p) & (top_p < 1.0)  # keep the first that crosses top_p
    ordered = ordered.masked_fill(drop, -float("inf"))
    kept = torch.full_like(scores, -float("inf")).scatter(1, order, ordered)
    return (kept + noise).argmax(dim=-1)


def sampling_tensors(sampling: Sampling, vocab: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The request's sampling parameters as the device tensors ``sample_from`` and ``gumbel_noise`` take."""
    return {"temperature": torch.tensor([[sampling.temperature or 1.0]], device=device),
            "top_k": torch.tensor([[sampling.top_k if 0 < sampling.top_k < vocab else vocab]], device=device),
            "top_p": torch.tensor([[sampling.top_p]], device=device),
            "seed": torch.tensor([sampling.seed], dtype=torch.long, device=device)}


def choose_token(scores: torch.Tensor, seen_ids: torch.Tensor, sampling: Sampling, step: int | torch.Tensor,
                 banned: list[int] | None = None, hashes: torch.Tensor | None = None,
                 params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``scores``: (1, vocab) logits; ``seen_ids``: (1, n) ids so far; ``step``: tokens generated before this
    one (an int, or a [1] device tensor a caller advances in place). ``hashes`` and ``params`` (from
    ``token_hashes`` and ``sampling_tensors``) can be built once per request. Returns (1,) ids."""
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
    vocab = scores.shape[-1]
    params = sampling_tensors(sampling, vocab, scores.device) if params is None else params
    hashes = token_hashes(vocab, scores.device) if hashes is None else hashes
    if not isinstance(step, torch.Tensor):
        step = torch.tensor([step], device=scores.device)
    noise = gumbel_noise(params["seed"], step, hashes)
    return sample_from(scores, params["temperature"], params["top_k"], params["top_p"], noise)
