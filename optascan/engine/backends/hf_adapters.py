"""The three small adapters that let ``model.generate`` run our way (see backends/hf.py).

``Chooser`` makes the seeded token choice, ``Stopper`` reads the cancel token and the spine's stop flag after
every token, ``Streamer`` hands each new token to the spine.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..cancel import CancelToken
from .base import OnToken, Sampling
from .torch_sampling import choose_token, sampling_tensors, token_hashes


class Chooser(LogitsProcessor):
    """Makes the token choice itself and leaves generate() a one-hot row, so its greedy pick is ours.

    Plain greedy decoding needs no choice of ours (generate's argmax is the same argmax), so that path only
    masks banned ids in place: no extra kernels, no host round trip per token.
    """

    def __init__(self, sampling: Sampling, banned: list[int] | None) -> None:
        self.sampling, self.banned = sampling, banned
        self.plain_greedy = sampling.temperature == 0.0 and sampling.repetition_penalty == 1.0
        self._banned_ids: torch.Tensor | None = None
        # the sampler's per-token-id hashes, parameters and step counter: device tensors built at the first
        # token and reused (no host-to-device copies per token)
        self._hashes: torch.Tensor | None = None
        self._params: dict[str, torch.Tensor] | None = None
        self._step: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.plain_greedy:
            if self.banned:
                if self._banned_ids is None:  # built once per request, on the scores' device
                    self._banned_ids = torch.tensor(self.banned, device=scores.device)
                scores.index_fill_(1, self._banned_ids, -float("inf"))
            return scores
        if self._step is None:
            self._hashes = token_hashes(scores.shape[-1], scores.device)
            self._params = sampling_tensors(self.sampling, scores.shape[-1], scores.device)
            self._step = torch.zeros(1, dtype=torch.long, device=scores.device)
        chosen = choose_token(scores, input_ids, self.sampling, self._step, self.banned, self._hashes, self._params)
        self._step += 1
        one_hot = torch.full_like(scores, -float("inf"))
        return one_hot.scatter_(1, chosen[:, None], 0.0)


class Stopper(StoppingCriteria):
    def __init__(self, cancel: CancelToken) -> None:
        self.cancel = cancel
        self.stop = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.stop or self.cancel.cancelled
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Streamer(BaseStreamer):
    def __init__(self, on_token: OnToken, stopper: Stopper) -> None:
        self.on_token, self.stopper = on_token, stopper
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            if not self.stopper.stop and not self.on_token(int(token_id)):
                self.stopper.stop = True

    def end(self) -> None:
        pass
