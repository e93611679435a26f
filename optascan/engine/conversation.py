"""Request → conversation: the OpenAI chat shape normalised to what chat templates expect.

Pure: images stay as the caller's sources here; they are decoded in the worker, under the cancel token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from ..types import Request

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """``messages`` use ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` parts; ``images``
    holds the image sources in the order their parts appear."""

    messages: tuple[dict, ...]
    images: tuple[Any, ...]

    def as_text_messages(self) -> list[dict]:
        """Plain-string contents, for text-only chat templates."""
        return [{"role": m["role"], "content": "".join(p["text"] for p in m["content"] if p["type"] == "text")}
                for m in self.messages]


def to_conversation(request: Request) -> Conversation:
    if request.prompt is not None:
        parts = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]
        return Conversation(({"role": "user", "content": parts},), tuple(request.images))
    messages, images = [], []
    for i, message in enumerate(request.messages or ()):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with 'role' and 'content'", field="messages")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                                 field="messages")
        messages.append({"role": role, "content": _parts(message.get("content"), i, images)})
    if messages[-1]["role"] == "assistant":
        raise InvalidRequest("the last message must not be from the assistant", field="messages")
    return Conversation(tuple(messages), tuple(images))


def _parts(content: Any, index: int, images: list) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"messages[{index}].content must be a string or a non-empty list of parts",
                             field="messages")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"messages[{index}]: image_url needs a 'url'", field="messages")
            images.append(url)
            parts.append({"type": "image"})
        elif kind == "image" and part.get("image") is not None:
            images.append(part["image"])  # our extension: any image input the intake accepts
            parts.append({"type": "image"})
        else:
            raise InvalidRequest(f"messages[{index}]: unsupported content part {part!r:.80}",
                                 field="messages", hint="use 'text' and 'image_url' parts")
    return parts
