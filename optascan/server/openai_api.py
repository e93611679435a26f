"""``POST /v1/chat/completions`` and ``GET /v1/models`` in the OpenAI wire format (streamed as SSE)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from ..errors import InvalidRequest
from ..types import FinishReason
from ..types import Request as GenerationRequest
from .errors import error_body, status_of
from .service import Service, check_image_parts, new_id

router = APIRouter()
HOLD_S = 0.5  # see chat_completions: how long a stream's headers wait for its first token


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields (user, logprobs=false, ...) are ignored

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    response_format: dict[str, Any] | None = None
    # vLLM-style extensions
    ignore_eos: bool = False
    top_k: int | None = None
    repetition_penalty: float | None = None


def to_request(body: ChatCompletionRequest, allow_urls: bool) -> GenerationRequest:
    if body.n not in (None, 1):
        raise InvalidRequest("only n=1 is supported", field="n")
    check_image_parts(body.messages, allow_urls)
    schema = None
    if body.response_format:
        kind = body.response_format.get("type")
        if kind == "json_schema":
            spec = body.response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest("response_format.json_schema needs a 'schema' object", field="response_format")
        elif kind == "json_object":
            schema = {"type": "object"}
        elif kind not in ("text", None):
            raise InvalidRequest(f"unknown response_format type {kind!r}", field="response_format")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    return GenerationRequest(
        messages=body.messages, max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed, stop=stop, json_schema=schema,
        ignore_eos=body.ignore_eos, top_k=body.top_k or 0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty)


def _finish(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"  # OpenAI has no "cancelled"


def _usage(result) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens}


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    service: Service = request.app.state.service
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "optascan"}
                                       for name in service.model_names()]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict:
    service: Service = request.app.state.service
    if model_id not in service.model_names():
        from ..errors import ModelNotFound

        raise ModelNotFound(f"model {model_id!r} is not served here", hint="GET /v1/models lists them")
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "optascan"}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    service: Service = request.app.state.service
    model = service.check_model(body.model)
    generation = to_request(body, service.settings.allow_image_urls)
    completion_id = f"chatcmpl-{new_id()}"
    created = int(time.time())
    events = service.stream(model, generation, completion_id)
    if not body.stream:
        result = await _until_done(events, request, service, completion_id)
        if result.error is not None:
            raise result.error
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": _finish(result.finish_reason)}],
                "usage": _usage(result)}
    # Hold the response briefly, until the first token or the end: errors that come fast (a bad image, a prompt
    # too long) are then plain HTTP errors with their status. A request that waits in the queue or prefills
    # longer starts its stream anyway (headers, X-Generation-Id for cancel); a later error is an error event.
    pump = _Pump(events)
    first = await pump.next()
    try:
        async with asyncio.timeout(HOLD_S):  # cancels only the wait on the queue, never the generation
            while first is not None and not (first.delta or first.result is not None):
                first = await pump.next()
    except TimeoutError:
        pass
    if first is not None and first.result is not None and first.result.error is not None:
        await pump.close()  # finished: release the model and count the request now
        raise first.result.error
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return StreamingResponse(_sse(first, pump, completion_id, created, model, include_usage),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache",
                                                                      "X-Generation-Id": completion_id})


async def _until_done(events: AsyncIterator, request: Request, service: Service, completion_id: str):
    """The final result of a non-streamed request; a client that hangs up cancels the generation."""
    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        service.cancel(completion_id)

    watcher = asyncio.create_task(watch())
    try:
        result = None
        async for event in events:
            result = event.result or result
        return result
    finally:
        watcher.cancel()


class _Pump:
    """Moves a generation's events into a queue from a task of its own, so waiting for one with a timeout never
    cancels the generation; closing the pump (client gone) does."""

    def __init__(self, events: AsyncIterator) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.events = events
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.events:
                self.queue.put_nowait(event)
        except Exception as error:  # noqa: BLE001 - a refusal before the first event (queue full, bad model)
            self.queue.put_nowait(error)
        finally:
            self.queue.put_nowait(None)

    async def next(self):
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the generation reports its own errors
            pass
        await self.events.aclose()


async def _sse(first, pump: _Pump, completion_id: str, created: int, model: str,
               include_usage: bool) -> AsyncIterator[str]:
    def chunk(delta: dict, finish: str | None, **extra: Any) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    try:
        event = first
        while event is not None:
            if event.delta:
                yield chunk({"content": event.delta}, None)
            if event.result is not None:
                result = event.result
                if result.error is not None:
                    status, code = status_of(result.error)
                    body = error_body(result.error.message, code, status, hint=result.error.hint,
                                      recoverable=result.error.recoverable)
                    yield f"data: {json.dumps(body)}\n\n"
                else:
                    yield chunk({}, _finish(result.finish_reason))
                    if include_usage:
                        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [], "usage": _usage(result)}
                        yield f"data: {json.dumps(body)}\n\n"
                break
            event = await pump.next()
        yield "data: [DONE]\n\n"
    finally:
        await pump.close()  # a client that went away: the generation is cancelled here
