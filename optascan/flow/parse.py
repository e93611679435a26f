"""Get the JSON object out of a model's reply when constrained decoding was not available.

Models wrap JSON in prose and code fences, use single quotes, leave trailing commas, write Python's
True/None, or stop mid-object at max_tokens. ``parse_json`` tries, in order: the text as is; each fenced
block; each balanced {...} span; then a repair pass (quotes, commas, literals, comments) and, for a reply cut
off, closing what is still open. It returns the first dict that parses, else raises ``ParseError`` with the
raw text. Pure: a small scanner, no regex soup over nested structures.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ParseError

_FENCE = re.compile(r"```(?:json|JSON|js|javascript)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_LITERALS = {"True": "true", "False": "false", "None": "null", "NaN": "null", "undefined": "null"}


def parse_json(text: str) -> dict[str, Any]:
    """The JSON object in ``text``; ``ParseError`` (holding ``raw``) if none can be recovered."""
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)] + _object_spans(text)
    for candidate in candidates:
        for attempt in (candidate, _repair(candidate), _close_truncated(_repair(candidate))):
            try:
                value = json.loads(attempt, strict=False)  # raw newlines or tabs inside strings are fine
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    raise ParseError("no JSON object could be recovered from the model's reply", raw=text)


def _object_spans(text: str) -> list[str]:
    """Every top-level {...} span (string-aware), longest first; an unclosed one runs to the end."""
    spans, depth, start, in_string, quote, escaped = [], 0, None, False, "", False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
            continue
        if ch in "\"'" and depth:
            in_string, quote = True, ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                spans.append(text[start:i + 1])
                start = None
    if depth and start is not None:
        spans.append(text[start:])  # cut off mid-object
    return sorted(spans, key=len, reverse=True)


def _repair(text: str) -> str:
    """Single-quoted strings → double-quoted, Python literals → JSON, comments and trailing commas dropped."""
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            j, chars = i + 1, []
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n:
                    chars.append(text[j:j + 2])
                    j += 2
                    continue
                chars.append('\\"' if text[j] == '"' else text[j])
                j += 1
            body = "".join(chars)
            if ch == "'":
                body = body.replace("\\'", "'")
            out.append('"' + body + ('"' if j < n else ""))
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif ch.isalpha():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_LITERALS.get(word, word))
            i = j
        else:
            out.append(ch)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def _close_truncated(text: str) -> str:
    """Best effort for a reply cut off at max_tokens: drop a dangling key or comma, close strings and brackets."""
    stack, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    if not stack and not in_string:
        return text
    tail = (text + ('"' if in_string else "")).rstrip()
    tail = re.sub(r',\s*$|,?\s*"[^"]*"\s*:\s*$|:\s*$', "", tail)  # "key": with no value, or a comma
    if stack and stack[-1] == "}":  # inside an object a lone string can only be a key cut short
        tail = re.sub(r'([{,])\s*"[^"]*"$', lambda m: "" if m.group(1) == "," else "{", tail)
    return tail + "".join(reversed(stack))
