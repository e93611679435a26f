"""Server-sent events from work that runs in a thread: ``data: {json}`` per event, the final dict last.

A client that goes away cancels the work (its CancelToken), and the response waits for the thread to stop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from starlette.responses import StreamingResponse

from ..engine.cancel import CancelToken
from ..errors import OptascanError
from .errors import error_body, status_of


def sse_response(work: Callable[[CancelToken, Callable[[dict], None]], dict], stream_id: str | None = None
         ) -> StreamingResponse:
    """Run ``work`` in a thread; its events and final dict stream as SSE. A client that leaves cancels it."""
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
        finally:
            emit(None)

    async def body() -> AsyncIterator[str]:
        task = asyncio.create_task(asyncio.to_thread(runner))
        try:
            while (payload := await events.get()) is not None:
                yield f"data: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n"
        finally:
            token.cancel("the client went away")
            await asyncio.shield(task)

    headers = {"Cache-Control": "no-cache", **({"X-Stream-Id": stream_id} if stream_id else {})}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
