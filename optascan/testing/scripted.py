"""A scripted backend: the seam for tests of the engine, and later the server and the flow.

It plays back a fixed list of token ids through the same protocol as a real backend, honouring the
cancel token before every step, and counts the steps it ran. Never the only test of a feature: the
tiny real checkpoints cover the real path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..engine.backends.base import OnToken, Prepared, Sampling
from ..engine.cancel import CancelToken, check
from ..engine.conversation import Conversation
from ..errors import OptascanError, VisionNotSupported


class ScriptedBackend:
    name = "scripted"
    device = "cpu"
    image_limits = None
    kv_bytes_per_token = 0
    context_length: int | None = None
    supports_json_schema = False
    budget_bytes: int | None = None  # tests set it to exercise the per-request memory check

    def __init__(self, token_ids: Sequence[int], decode: Callable[[Sequence[int]], str], *,
                 eos_token_ids: Sequence[int] = (), supports_images: bool = True,
                 step: Callable[[int], None] | None = None) -> None:
        self.token_ids = list(token_ids)
        self.replies: list[list[int]] = []  # if set, each generate() plays the next one instead of token_ids
        self._decode = decode
        self.eos_token_ids = frozenset(eos_token_ids)
        self.supports_images = supports_images
        self.step = step  # called before each decode step with its index (tests block or fail here)
        self.steps_run = 0
        self.prepared: list[Conversation] = []
        self.trims = 0
        self.lock = threading.Lock()

    def prepare(self, conversation: Conversation, images: Sequence[Any]) -> Prepared:
        if images and not self.supports_images:
            raise VisionNotSupported("scripted text-only backend")
        self.prepared.append(conversation)
        # like dynamic-resolution processors: one image token per 64×64 pixels (at least 4)
        image_tokens = sum(max(4, (image.width * image.height) // 4096) for image in images)
        return Prepared(inputs=None, prompt_tokens=3 + image_tokens, image_tokens=image_tokens, prompt_tail=())

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._decode(token_ids)

    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        script = self.replies.pop(0) if self.replies else self.token_ids
        for index, token_id in enumerate(script[: sampling.max_tokens]):
            check(cancel)
            if self.step is not None:
                self.step(index)
            with self.lock:
                self.steps_run += 1
            if not on_token(token_id):
                return
            if token_id in self.eos_token_ids and not sampling.ignore_eos:
                return

    def map_error(self, error: BaseException, stage: str) -> OptascanError | None:
        return None

    def request_budget_bytes(self) -> int | None:
        return self.budget_bytes

    def after_request(self) -> None:
        self.trims += 1

    def close(self) -> None:
        pass


def byte_tokens(text: str) -> tuple[list[int], Callable[[Sequence[int]], str]]:
    """One token per UTF-8 byte of ``text``, and the matching decode (which shows partial characters
    as U+FFFD, as byte-level tokenizers do). Ids of 256 and above are special: decoded as nothing."""
    ids = list(text.encode("utf-8"))
    return ids, lambda token_ids: bytes(t for t in token_ids if t < 256).decode("utf-8", errors="replace")
