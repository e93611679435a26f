"""Incremental detokenization: token ids in, text deltas out, never half a character.

Byte-level tokenizers split multi-byte UTF-8 characters across tokens; decoding such a prefix yields
U+FFFD. We hold those tokens back until the character is complete. Each step decodes only a short
window (the tokens since the last emitted delta, plus the few before them that give spacing context),
so the total work is linear in the output length — the approach of vLLM's incremental detokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"
# Prompt tokens kept as context: sentencepiece-style tokenizers drop a word's leading space when the
# word is decoded alone, so the window must start a few tokens earlier.
CONTEXT_TOKENS = 4
# A character is at most 4 bytes, so more held tokens than this can only be a genuinely invalid sequence
# (random or broken models emit them): show it as U+FFFD rather than let the window grow without bound.
MAX_HELD_TOKENS = 8


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas.

    ``decode`` maps a list of ids to text (special tokens skipped). ``context`` is the tail of the prompt.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], context: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(context[-CONTEXT_TOKENS:]) if context else []
        self._prefix = 0  # window start: ids before it are never decoded again
        self._read = len(self._ids)  # ids before it have been emitted as text
        self.text = ""

    def add(self, token_id: int) -> str:
        """Add one token; return the new complete text (possibly "")."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        full_text = self._decode(self._ids[self._prefix:])
        held = len(self._ids) - self._read
        if len(full_text) <= len(prefix_text) or (full_text.endswith(REPLACEMENT) and held <= MAX_HELD_TOKENS):
            return ""  # an incomplete character (or nothing visible yet): wait for more tokens
        delta = full_text[len(prefix_text):]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Emit whatever is held back at the end (a genuinely invalid byte sequence shows as U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        delta = self._decode(self._ids[self._prefix:])[len(prefix_text):]
        self._prefix = self._read = len(self._ids)
        self.text += delta
        return delta
