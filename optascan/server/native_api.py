"""What the OpenAI API lacks: health, status, metrics, cancel, and models (list, pull with progress as SSE,
unload, delete). The flow and the history are in flow_api.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from ..engine.cancel import CancelToken
from ..errors import OptascanError
from .service import Service, new_id
from .sse import sse_response

router = APIRouter()


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
    # the pool knows a model by the name it was asked for (catalog name or repo id): unload every alias
    for loaded in service.pool.loaded():
        if loaded["name"] == name or _repo_of(loaded["name"]) == model.repo_id:
            await asyncio.to_thread(service.pool.unload, loaded["name"])
    await asyncio.to_thread(delete_installed, model)
    return {"deleted": model.repo_id, "bytes": model.size_on_disk}


class PullBody(BaseModel):
    model: str = Field(min_length=1)
    revision: str | None = None


@router.post("/api/pull")
async def pull(body: PullBody, request: Request) -> StreamingResponse:
    from ..models.pull import pull as run_pull
    from ..models.pull import repo_for

    repo_for(body.model)  # a malformed name or the shipped demo: a plain 400/404 before any stream starts

    def work(token: CancelToken, emit: Callable[[dict], None]) -> dict:
        result = run_pull(body.model, revision=body.revision, cancel=token,
                          on_event=lambda e: emit({"type": "progress", **_plain(e), "fraction": e.fraction}))
        return {"type": "done", "repo_id": result.repo_id, "commit": result.commit,
                "downloaded_bytes": result.downloaded_bytes, "cancelled": result.cancelled}

    return sse_response(work, f"pull-{new_id()}", _service(request).generations)


def _plain(value: Any) -> dict:
    out = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        out[f.name] = getattr(item, "value", item)
    return out


def _repo_of(name: str) -> str | None:
    from ..models.pull import repo_for

    try:
        return repo_for(name)
    except OptascanError:
        return None
