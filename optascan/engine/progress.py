"""Per-request clock: timestamps of each stage, live tok/s and ETA, and the final timings."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..types import Timings


class RequestClock:
    """Marks the stages of one request. All times come from one monotonic ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._now = clock
        self.submitted = clock()
        self.started: float | None = None
        self.preprocessed: float | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None

    def start(self) -> None:
        self.started = self._now()

    def preprocess_done(self) -> None:
        self.preprocessed = self._now()

    def token(self) -> None:
        t = self._now()
        if self.first_token is None:
            self.first_token = t
        self.last_token = t

    def tokens_per_s(self, tokens: int) -> float | None:
        """Decode speed: tokens after the first, over the time since the first (prefill excluded)."""
        if tokens < 2 or self.first_token is None or self.last_token is None:
            return None
        span = self.last_token - self.first_token
        return (tokens - 1) / span if span > 0 else None

    def eta_s(self, tokens: int, max_tokens: int) -> float | None:
        """Upper bound on time left: the model may stop before max_tokens."""
        rate = self.tokens_per_s(tokens)
        return (max_tokens - tokens) / rate if rate else None

    def timings(self, tokens: int) -> Timings:
        end = self._now()
        started = self.started if self.started is not None else end
        return Timings(
            queue_s=started - self.submitted,
            preprocess_s=(self.preprocessed - started) if self.preprocessed is not None else 0.0,
            ttft_s=(self.first_token - self.submitted) if self.first_token is not None else None,
            decode_tokens_per_s=self.tokens_per_s(tokens),
            total_s=end - self.submitted,
        )
