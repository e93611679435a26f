"""The Opta flow over HTTP (analyze → answer, streamed as SSE, saved to the history) and the history itself."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from ..engine.cancel import CancelToken
from ..errors import InvalidRequest
from .errors import HTTPProblem
from .service import Service, check_image_parts, new_id
from .sse import sse_response

router = APIRouter()
MAX_SESSIONS = 64  # flow sessions kept between analyze and answer (oldest dropped first) ...
SESSION_TTL_S = 1800.0  # ... and none older than this: each holds its images


def _service(request: Request) -> Service:
    return request.app.state.service


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
    from ..flow.prompts import depth
    from ..flow.session import OptaSession

    service = _service(request)
    model = service.check_model(body.model)
    depth(body.depth)  # unknown depth: 400 now, not an error event later
    if not body.goal.strip():
        raise InvalidRequest("the goal is empty", field="goal")
    check_image_parts([{"content": [{"type": "image_url", "image_url": {"url": u}} for u in body.images]}],
                      service.settings.allow_image_urls)
    session_id = new_id()
    sessions = _sessions(request)

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        def turn(engine):
            session = OptaSession(engine, body.goal, images=body.images, depth_name=body.depth, seed=body.seed)
            sessions[session_id] = (model, session, time.monotonic())
            while len(sessions) > MAX_SESSIONS:
                sessions.popitem(last=False)
            return session.analyze(on_event=_relay(emit), cancel=token)

        analysis = _holding(service, model, turn)
        return {"type": "analysis", "session_id": session_id, "understanding": analysis.understanding,
                "questions": [dataclasses.asdict(q) for q in analysis.questions]}

    return sse_response(work, session_id, service.generations)


@router.post("/api/flow/{session_id}/answer")
async def answer(session_id: str, body: AnswerBody, request: Request) -> StreamingResponse:
    from ..flow.history import History

    service = _service(request)
    sessions = _sessions(request)
    found = sessions.get(session_id)
    if found is None:
        raise InvalidRequest(f"no flow session {session_id!r}", field="session_id",
                             hint="start again with POST /api/flow/analyze (sessions expire after 30 minutes)")
    model, session, _ = found

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        def turn(engine):
            session.engine = engine  # the model may have been unloaded and loaded again since analyze
            return session.answer(body.answers, on_event=_relay(emit), cancel=token)

        result = _holding(service, model, turn)
        with History() as history:
            scan_id = session.record(history)
        sessions.pop(session_id, None)  # done: its images go with it
        return {"type": "answer", "session_id": session_id, "history_id": scan_id, "result": result.to_dict(),
                "markdown": result.markdown}

    return sse_response(work, session_id, service.generations)


def _sessions(request: Request) -> OrderedDict:
    sessions: OrderedDict = request.app.state.sessions
    now = time.monotonic()
    for key in [k for k, (_, _, created) in sessions.items() if now - created > SESSION_TTL_S]:
        sessions.pop(key, None)
    return sessions


def _holding(service: Service, model: str, run: Callable[[Any], Any]) -> Any:
    """Run a flow turn with the model's engine held in the pool (not evicted mid-turn)."""
    engine = service.pool.get(model)
    try:
        return run(engine)
    finally:
        service.pool.release(engine)


def _relay(emit: Callable[[dict], None]) -> Callable:
    def on_event(event) -> None:
        emit({"type": "progress", "state": event.state.value, "delta": event.delta, "tokens": event.tokens,
              "max_tokens": event.max_tokens, "tokens_per_s": event.tokens_per_s,
              "queue_position": event.queue_position})
    return on_event


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
