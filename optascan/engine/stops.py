"""Stop strings across token boundaries: a small state machine over plain text.

Text that could be the start of a stop string is held back until the next delta tells whether it is
one; text before a matched stop string is released and the rest is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to show now, whether a stop string was found)."""
        if self.matched is not None:
            return "", True
        if not self._stops:
            return text, False
        pending = self._pending + text
        hits = [(i, s) for s in self._stops if (i := pending.find(s)) >= 0]
        if hits:
            index, self.matched = min(hits)
            self._pending = ""
            return pending[:index], True
        hold = self._longest_partial_stop(pending)
        self._pending = pending[len(pending) - hold:] if hold else ""
        return pending[: len(pending) - hold], False

    def flush(self) -> str:
        """At the end of generation: release held-back text that turned out not to be a stop string."""
        out, self._pending = self._pending, ""
        return out

    def _longest_partial_stop(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
