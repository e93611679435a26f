"""What the routes share: settings, the model pool, running generations (for cancel), metrics.

Routes stay thin: they turn HTTP into a ``Request`` and events into HTTP; this module runs the request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine.cancel import CancelToken
from ..engine.engine import Engine
from ..engine.residency import ModelPool
from ..errors import InvalidRequest, ModelNotFound, OptascanError
from ..images.intake import IntakeSettings
from ..models.catalog import CATALOG
from ..types import Event, Request
from .metrics import Metrics

MiB = 2**20


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 11435
    models: list[str] = field(default_factory=lambda: ["demo"])  # the first is the default
    api_key: str | None = None
    allowed_hosts: list[str] | None = None  # None: this machine's names and the bind address
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 32 * MiB
    allow_image_urls: bool = False
    keep_alive_s: float = 300.0
    max_queue: int = 32
    device: str = "auto"
    mode: str = "balanced"
    engine: str = "auto"


class Service:
    def __init__(self, settings: ServerSettings, load: Callable[[str], Engine] | None = None) -> None:
        self.settings = settings
        self.pool = ModelPool(load or self._load, keep_alive_s=settings.keep_alive_s)
        self.generations: dict[str, CancelToken] = {}
        self.metrics = Metrics(queue_depth=self._queue_depth, device_memory=lambda: float(self.pool.used_bytes))
        self.draining = False

    # --- models --------------------------------------------------------------------------------------
    def _load(self, name: str) -> Engine:
        from ..engine.engine import load

        return load(name, device=self.settings.device, mode=self.settings.mode, max_queue=self.settings.max_queue,
                    image_settings=IntakeSettings(allow_urls=self.settings.allow_image_urls),
                    engine=self.settings.engine)

    def model_names(self) -> list[str]:
        """What clients may ask for: the server's models, and models in the local cache (by catalog name or id)."""
        from ..models.store import installed_models

        names = list(self.settings.models)
        installed = {m.repo_id for m in installed_models()}
        names += [e.name for e in CATALOG if e.repo_id in installed and e.name not in names]
        names += sorted(r for r in installed if r not in names)
        return names

    def check_model(self, name: str | None) -> str:
        chosen = name or self.settings.models[0]
        if chosen in self.settings.models:  # the common case needs no scan of the model cache on disk
            return chosen
        if chosen not in self.model_names():
            raise ModelNotFound(f"model {chosen!r} is not served here",
                                hint="GET /v1/models lists the models this server has; pull others first")
        return chosen

    async def engine(self, name: str) -> Engine:
        return await asyncio.to_thread(self.pool.get, name)  # a load blocks: keep the event loop free

    def _queue_depth(self) -> float:
        return float(self.pool.queue_depth)

    # --- generation ----------------------------------------------------------------------------------
    async def stream(self, model: str, request: Request, generation_id: str | None = None) -> AsyncIterator[Event]:
        """Events of one generation; cancellable through ``cancel(generation_id)`` and by closing the iterator."""
        if self.draining:
            from ..errors import EngineClosed

            raise EngineClosed("the server is shutting down", hint="retry against a running server")
        generation_id = generation_id or new_id()
        engine = await self.engine(model)
        token = CancelToken()
        self.generations[generation_id] = token
        self.metrics.in_flight.inc()
        outcome, result = "error", None
        try:
            async for event in engine.astream(request, cancel=token):
                if event.result is not None:
                    result = event.result
                    outcome = "error" if result.error else result.finish_reason.value
                yield event
        except OptascanError:
            outcome = "rejected"
            raise
        finally:
            if result is None and token.cancelled:
                outcome = "cancelled"
            self.metrics.in_flight.dec()
            self.metrics.finished(result, outcome)
            self.generations.pop(generation_id, None)
            self.pool.release(engine)

    def cancel(self, generation_id: str) -> bool:
        token = self.generations.get(generation_id)
        if token is None:
            return False
        token.cancel("cancelled through the API")
        return True

    def begin_drain(self) -> None:
        """Shutting down: new generations are refused (503) and running ones cancelled."""
        self.draining = True
        self.cancel_all("the server is shutting down")

    def cancel_all(self, reason: str) -> None:
        for token in list(self.generations.values()):
            token.cancel(reason)


def new_id() -> str:
    return uuid.uuid4().hex[:24]


def check_image_parts(messages: list[dict[str, Any]], allow_urls: bool) -> None:
    """Only ``data:`` URLs (and http(s) when enabled) reach the image intake: never a path or file:// URL."""
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                url = url if isinstance(url, str) else ""  # checked exactly as the intake will read it
                if url.startswith("data:"):
                    continue
                if url.startswith(("http://", "https://")):
                    if allow_urls:
                        continue
                    raise InvalidRequest(f"messages[{index}]: image URLs are off on this server; send the image as "
                                         "a data: URL", field="messages",
                                         hint="or start the server with --allow-image-urls")
                raise InvalidRequest(f"messages[{index}]: an image_url must be a data: URL"
                                     + (" or http(s) URL" if allow_urls else ""), field="messages")
            elif kind not in ("text", None):
                raise InvalidRequest(f"messages[{index}]: content parts must be 'text' or 'image_url', got {kind!r}",
                                     field="messages")
