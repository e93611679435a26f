"""Small frozen dataclasses shared by every layer: the request, the one event type, the result.

Nothing here imports torch; validation raises :class:`optascan.errors.InvalidRequest`.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InvalidRequest, OptascanError


class State(str, enum.Enum):
    """Where a request is. The last three are final."""

    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    PREFILL = "prefill"
    GENERATING = "generating"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (State.DONE, State.CANCELLED, State.FAILED)


IMAGE_TIERS = ("quality", "balanced", "battery")  # sizes in images/prepare.py


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end-of-sequence token or a stop string
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Request:
    """One generation request.

    Give either ``messages`` (the OpenAI chat shape: ``{"role", "content"}`` where content is a string or a
    list of ``{"type": "text"}`` / ``{"type": "image_url"}`` / ``{"type": "image"}`` parts) or ``prompt``
    with optional ``images`` (paths, bytes, PIL images, base64 strings or ``data:`` URLs).
    ``temperature=0`` means greedy decoding. ``top_k=0`` and ``top_p=1`` switch those filters off.
    ``ignore_eos`` keeps generating past the end-of-sequence token (for benchmarks and tests).
    ``image_tier`` caps image size: "quality" (2048 px), "balanced" (≈1 MP) or "battery" (≈0.4 MP); None
    lets the engine's performance mode decide; so does ``max_tokens=None`` (saver 128, balanced 256,
    performance 512). ``json_schema`` constrains the output to JSON matching it
    (constrained decoding; needs a grammar library: ``pip install 'optascan[structured]'``).
    """

    messages: Sequence[dict] | None = None
    prompt: str | None = None
    images: Sequence[Any] = ()
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: Sequence[str] = ()
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    image_tier: str | None = None
    json_schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "images", tuple(self.images) if self.images else ())
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(self.messages))
        self.validate()

    def validate(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidRequest("give exactly one of 'messages' or 'prompt'", field="messages")
        if self.messages is not None:
            if not self.messages:
                raise InvalidRequest("'messages' is empty", field="messages")
            if self.images:
                raise InvalidRequest("with 'messages', put images inside the messages as image_url parts",
                                     field="images")
        elif not self.prompt or not self.prompt.strip():
            raise InvalidRequest("'prompt' is empty", field="prompt")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, 1, 1_000_000)
        _check_float("temperature", self.temperature, 0.0, 10.0)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_int("top_k", self.top_k, 0, 1_000_000)
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, 10.0, low_open=True)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**63 - 1)
        if self.image_tier is not None and self.image_tier not in IMAGE_TIERS:
            raise InvalidRequest(f"'image_tier' must be one of {', '.join(IMAGE_TIERS)}, got {self.image_tier!r}",
                                 field="image_tier")
        if self.json_schema is not None:
            if not isinstance(self.json_schema, Mapping) or not self.json_schema:
                raise InvalidRequest("'json_schema' must be a non-empty JSON Schema object", field="json_schema")
            try:
                json.dumps(self.json_schema)
            except (TypeError, ValueError) as err:
                raise InvalidRequest(f"'json_schema' is not JSON: {err}", field="json_schema") from err
        if len(self.stop) > 16:
            raise InvalidRequest("at most 16 stop strings", field="stop")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise InvalidRequest("stop strings must be non-empty strings", field="stop")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a whole number from {low} to {high}, got {value!r}",
                             field=name)


def _check_float(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bound = f"above {low}" if low_open else f"from {low}"
        raise InvalidRequest(f"'{name}' must be a number {bound} to {high}, got {value!r}", field=name)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0  # includes the image tokens, as in the OpenAI API
    image_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Seconds. ``queue_s`` from submission to start, ``ttft_s`` from submission to the first token."""

    queue_s: float = 0.0
    preprocess_s: float = 0.0
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    total_s: float = 0.0


@dataclass(frozen=True)
class Result:
    """What a finished request produced; ``text`` holds the partial text when cancelled or failed."""

    request_id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    error: OptascanError | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "id": self.request_id, "model": self.model, "text": self.text,
            "finish_reason": self.finish_reason.value,
            "usage": {**asdict(self.usage), "total_tokens": self.usage.total_tokens},
            "timings": asdict(self.timings),
            "error": self.error.to_dict() if self.error else None,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class Event:
    """The one event type: state changes, progress and text deltas, and the final result.

    ``delta`` is new text (valid UTF-8, never part of a character); it is empty on pure state/progress
    events. ``result`` is set on the final event only (``state.is_final``).
    """

    request_id: str
    state: State
    delta: str = ""
    tokens: int = 0
    max_tokens: int = 0
    queue_position: int | None = None  # 0 = next to run; set while QUEUED
    tokens_per_s: float | None = None
    eta_s: float | None = None
    result: Result | None = None

    @property
    def fraction(self) -> float:
        """Share of ``max_tokens`` generated so far, 0..1 (1 once the request is final)."""
        if self.state.is_final:
            return 1.0
        return min(1.0, self.tokens / self.max_tokens) if self.max_tokens else 0.0

    @property
    def is_final(self) -> bool:
        return self.state.is_final
