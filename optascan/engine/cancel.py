"""A cancel token that any thread or asyncio task may set; the worker checks it at every step."""

from __future__ import annotations

import threading
from collections.abc import Callable


class CancelToken:
    """Thread-safe, one-way cancel flag.

    ``cancel()`` may be called from any thread (or from an asyncio task: it never blocks). The engine
    checks ``cancelled`` between stages and before every decode step, so a request ends within one step.
    """

    __slots__ = ("_event", "_lock", "_callbacks", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:  # outside the lock: a callback may take other locks
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the cancelling thread) once the token is cancelled; at once if it is."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"


class CancelledRun(Exception):
    """Internal signal: raised at a stage boundary inside the worker when the token is set.

    It never reaches users; the request ends with finish reason ``cancelled`` instead.
    """


def check(token: CancelToken) -> None:
    if token.cancelled:
        raise CancelledRun(token.reason)
