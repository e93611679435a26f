"""What the OpenAI API lacks: health, status, metrics, cancel, models (list, pull with progress, unload,
delete) and the Opta flow (analyze → answer, streamed). Streams are SSE: ``data: {json}`` per event."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from ..engine.cancel import CancelToken
from ..errors import InvalidRequest, OptascanError
from .errors import HTTPProblem, error_body, status_of
from .service import Service, check_image_parts, new_id

router = APIRouter()
MAX_SESSIONS = 64  # flow sessions kept between analyze and answer (oldest dropped first)


def _service(request: Request) -> Service:
    return request.app.state.service


@router.get("/health")
async def health(request: Request) -> dict:
    return {"status": "draining" if _service(request).draining else "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/api/status")
async def status(request: Request) -> dict:
    from ..cli.status import collect

    service = _service(request)
    info = await asyncio.to_thread(collect)
    return {**info, "loaded": service.pool.loaded(), "queue_depth": service.pool.queue_depth,
            "running": sorted(service.generations), "mode": service.settings.mode,
            "default_model": service.settings.models[0]}


@router.post("/api/generations/{generation_id}/cancel")
async def cancel(generation_id: str, request: Request) -> dict:
    if not _service(request).cancel(generation_id):
        from ..errors import InvalidRequest

        raise InvalidRequest(f"no running generation {generation_id!r}", field="generation_id",
                             hint="it may have finished already")
    return {"cancelled": generation_id}


# --- models ------------------------------------------------------------------------------------------
@router.get("/api/models")
async def models(request: Request) -> dict:
    from ..models.catalog import CATALOG
    from ..models.store import installed_models

    service = _service(request)
    installed = {m.repo_id: m for m in await asyncio.to_thread(installed_models)}
    loaded = {r["name"]: r for r in service.pool.loaded()}
    catalog = [{"name": e.name, "repo_id": e.repo_id, "download_bytes": e.download_bytes, "params": e.params,
                "licence": e.licence, "gated": e.gated, "description": e.description,
                "installed": e.repo_id is None or e.repo_id in installed,
                "loaded": loaded.get(e.name)} for e in CATALOG]
    return {"served": service.model_names(), "catalog": catalog,
            "installed": [{"repo_id": m.repo_id, "bytes": m.size_on_disk} for m in installed.values()],
            "loaded": list(loaded.values())}


@router.post("/api/models/{name:path}/unload")
async def unload(name: str, request: Request) -> dict:
    return {"unloaded": await asyncio.to_thread(_service(request).pool.unload, name)}


@router.delete("/api/models/{name:path}")
async def delete(name: str, request: Request) -> dict:
    from ..models.store import delete_installed, find_installed

    service = _service(request)
    model = find_installed(name)  # ModelNotFound → 404
    await asyncio.to_thread(service.pool.unload, name)
    await asyncio.to_thread(delete_installed, model)
    return {"deleted": model.repo_id, "bytes": model.size_on_disk}


class PullBody(BaseModel):
    model: str = Field(min_length=1)
    revision: str | None = None


@router.post("/api/pull")
async def pull(body: PullBody, request: Request) -> StreamingResponse:
    from ..models.pull import pull as run_pull

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        result = run_pull(body.model, revision=body.revision, cancel=token,
                          on_event=lambda e: emit({"type": "progress", **_plain(e), "fraction": e.fraction}))
        return {"type": "done", "repo_id": result.repo_id, "commit": result.commit,
                "downloaded_bytes": result.downloaded_bytes, "cancelled": result.cancelled}

    return _sse(work)


# --- the Opta flow -------------------------------------------------------------------------------------
class AnalyzeBody(BaseModel):
    goal: str
    images: list[str] = []  # data: URLs
    depth: str = "balanced"
    model: str | None = None
    seed: int | None = None


class AnswerBody(BaseModel):
    answers: dict[str, Any] = {}


@router.post("/api/flow/analyze")
async def analyze(body: AnalyzeBody, request: Request) -> StreamingResponse:
    from ..flow.session import OptaSession

    service = _service(request)
    model = service.check_model(body.model)
    check_image_parts([{"content": [{"type": "image_url", "image_url": {"url": u}} for u in body.images]}],
                      service.settings.allow_image_urls)
    engine = await service.engine(model)
    try:
        session = OptaSession(engine, body.goal, images=body.images, depth_name=body.depth, seed=body.seed)
    finally:
        service.pool.release(engine)
    session_id = new_id()
    sessions: OrderedDict = request.app.state.sessions
    sessions[session_id] = (model, session)
    while len(sessions) > MAX_SESSIONS:
        sessions.popitem(last=False)

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        analysis = _holding(service, model, lambda: session.analyze(on_event=_relay(emit), cancel=token))
        return {"type": "analysis", "session_id": session_id, "understanding": analysis.understanding,
                "questions": [dataclasses.asdict(q) for q in analysis.questions]}

    return _sse(work, session_id)


@router.post("/api/flow/{session_id}/answer")
async def answer(session_id: str, body: AnswerBody, request: Request) -> StreamingResponse:
    from ..flow.history import History

    service = _service(request)
    found = request.app.state.sessions.get(session_id)
    if found is None:
        raise InvalidRequest(f"no flow session {session_id!r}", field="session_id",
                             hint="start again with POST /api/flow/analyze (sessions expire)")
    model, session = found

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        result = _holding(service, model, lambda: session.answer(body.answers, on_event=_relay(emit), cancel=token))
        with History() as history:
            scan_id = session.record(history)
        return {"type": "answer", "session_id": session_id, "history_id": scan_id, "result": result.to_dict(),
                "markdown": result.markdown}

    return _sse(work, session_id)


def _holding(service: Service, model: str, run: Callable[[], Any]) -> Any:
    """Run a flow turn with the model held in the pool (not evicted mid-turn)."""
    engine = service.pool.get(model)
    try:
        return run()
    finally:
        service.pool.release(engine)


def _relay(emit: Callable[[dict], None]) -> Callable:
    def on_event(event) -> None:
        emit({"type": "progress", "state": event.state.value, "delta": event.delta, "tokens": event.tokens,
              "max_tokens": event.max_tokens, "tokens_per_s": event.tokens_per_s,
              "queue_position": event.queue_position})
    return on_event


def _plain(value: Any) -> dict:
    out = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        out[f.name] = getattr(item, "value", item)
    return out


def _sse(work: Callable[[CancelToken, Callable[[dict], None]], dict], stream_id: str | None = None
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


# --- history -------------------------------------------------------------------------------------------
@router.get("/api/history")
async def history_list(q: str | None = None, limit: int = 50) -> dict:
    from ..flow.history import History

    def read() -> list[dict]:
        with History() as history:
            scans = history.search(q, limit) if q else history.list(limit)
            return [scan.to_dict() for scan in scans]

    return {"scans": await asyncio.to_thread(read)}


@router.get("/api/history/{scan_id}")
async def history_show(scan_id: str) -> dict:
    from ..flow.history import History

    def read() -> dict | None:
        with History() as history:
            scan = history.show(scan_id)
            return scan.to_dict(with_thumbnail=True) if scan else None

    found = await asyncio.to_thread(read)
    if found is None:
        raise HTTPProblem(404, f"no scan {scan_id!r} in the history", "scan_not_found", param="scan_id")
    return found


@router.get("/api/history/{scan_id}/thumbnail")
async def history_thumbnail(scan_id: str) -> Response:
    from ..flow.history import History

    def read() -> bytes | None:
        with History() as history:
            scan = history.show(scan_id)
            return scan.thumbnail if scan else None

    data = await asyncio.to_thread(read)
    if not data:
        raise HTTPProblem(404, f"no thumbnail for scan {scan_id!r}", "scan_not_found", param="scan_id")
    return Response(data, media_type="image/jpeg")


@router.delete("/api/history/{scan_id}")
async def history_delete(scan_id: str) -> dict:
    from ..flow.history import History

    def remove() -> bool:
        with History() as history:
            return history.delete(scan_id)

    return {"deleted": await asyncio.to_thread(remove)}
