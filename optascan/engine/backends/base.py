"""The backend protocol: what the spine (``engine/generate.py``) needs from a model runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...errors import OptascanError
from ...images.tokens import ProcessorLimits
from ..cancel import CancelToken
from ..conversation import Conversation


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    json_schema: str | None = None  # canonical JSON text of a schema the output must match


@dataclass(frozen=True)
class Prepared:
    """A conversation after chat template and processor: backend tensors plus the numbers usage needs."""

    inputs: Any
    prompt_tokens: int
    image_tokens: int
    prompt_tail: tuple[int, ...]  # last prompt ids: spacing context for the detokenizer
    metadata: dict = field(default_factory=dict)
    image_key: str = ""  # a digest of the image inputs: equal token ids do not mean equal pictures


# Called by the backend with each new token id; returns False to stop after this token.
OnToken = Callable[[int], bool]


class Backend(Protocol):
    name: str  # e.g. "hf"
    device: str  # e.g. "cuda:0", "cpu"
    supports_images: bool
    eos_token_ids: frozenset[int]
    image_limits: ProcessorLimits | None  # the processor's own size limits, to size images within them
    kv_bytes_per_token: int  # KV cache one token costs, for the per-request memory check
    supports_json_schema: bool  # constrained decoding available (a grammar library is installed)
    context_length: int | None  # positions the model was built for (prompt + reply); None: unknown

    def request_budget_bytes(self) -> int | None:
        """Device memory a request may use now (free × the engine's fraction); None: no check."""

    def prepare(self, conversation: Conversation, images: Sequence[Any]) -> Prepared:
        """Chat template + processor. Raises InvalidRequest for what the model cannot take."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """Token ids → text, special tokens skipped."""

    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        """Run vision encoding, prefill and decode, calling ``on_token`` once per token, in order.

        Must raise ``engine.cancel.CancelledRun`` when ``cancel`` is set before vision encoding, before
        prefill, or before any decode step; must stop after ``max_tokens`` tokens, after an
        end-of-sequence token (unless ``ignore_eos``), or once ``on_token`` returns False.
        """

    def map_error(self, error: BaseException, stage: str) -> OptascanError | None:
        """Translate a runtime error (OOM above all) into the error tree; None if it is not known."""

    def after_request(self) -> None:
        """Memory hygiene after each request (trim allocator caches above the model's limit)."""

    def close(self) -> None:
        """Release the model and its device memory."""
