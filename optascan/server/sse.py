"""Server-sent events from work that runs in a thread: ``data: {json}`` per event, the final dict last.

A client that goes away cancels the work (its CancelToken), and the response waits for the thread to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from starlette.responses import StreamingResponse

from ..engine.cancel import CancelToken
from ..errors import OptascanError
from .errors import error_body, status_of

log = logging.getLogger(__name__)


def sse_response(work: Callable[[CancelToken, Callable[[dict], None]], dict], stream_id: str,
                 running: dict[str, CancelToken]) -> StreamingResponse:
    """Run ``work`` in a thread; its events and final dict stream as SSE. A client that leaves cancels it, and
    so does ``POST /api/generations/{stream_id}/cancel`` (the token sits in ``running`` while it runs)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    token = CancelToken()

    def emit(payload: dict) -> None:
        loop.call_soon_threadsafe(events.put_nowait, payload)

    def runner() -> None:
        try:
            emit(work(token, emit))
        except OptascanError as error:
            status, code = status_of(error)
            emit({"type": "error", **error_body(error.message, code, status, param=getattr(error, "field", None),
                                                hint=error.hint, recoverable=error.recoverable)})
        except Exception as error:  # noqa: BLE001 - a bug: say so on the stream, keep serving
            log.exception("stream %s failed", stream_id)
            emit({"type": "error", **error_body(f"internal error: {type(error).__name__}", "internal_error", 500)})
        finally:
            emit(None)

    async def body() -> AsyncIterator[str]:
        running[stream_id] = token
        task = asyncio.create_task(asyncio.to_thread(runner))
        try:
            while (payload := await events.get()) is not None:
                yield f"data: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n"
        finally:
            token.cancel("the client went away")
            await asyncio.shield(task)
            running.pop(stream_id, None)

    headers = {"Cache-Control": "no-cache", "X-Stream-Id": stream_id}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
