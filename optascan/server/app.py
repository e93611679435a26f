"""The HTTP server: one FastAPI app over a ``Service``; everything else is in the routers.

    app = create_app(ServerSettings(models=["demo"]))
    uvicorn.run(app, host="127.0.0.1", port=11435)       # what `optascan serve` does

Request flow: Guard (Host allowlist, API key, body cap) → CORS (only if origins are listed) → routes
(openai_api, native_api, the page) → Service (pool, cancel registry, metrics) → Engine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from ..errors import OptascanError
from . import flow_api, native_api, openai_api
from .errors import HTTPProblem, error_body, optascan_error_response, problem_response
from .security import Guard, default_allowed_hosts
from .service import ServerSettings, Service

PAGE = Path(__file__).parent / "page"


def create_app(settings: ServerSettings, service: Service | None = None) -> FastAPI:
    service = service or Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.pool.start_sweeper(interval_s=min(5.0, max(0.5, settings.keep_alive_s / 10)))
        yield
        # shutdown (SIGTERM, Ctrl-C): refuse new work, stop what runs, unload
        service.begin_drain()
        service.pool.close()

    app = FastAPI(title="optascan", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.sessions = OrderedDict()
    app.include_router(openai_api.router)
    app.include_router(native_api.router)
    app.include_router(flow_api.router)

    @app.exception_handler(OptascanError)
    async def optascan_error(_: Request, error: OptascanError) -> JSONResponse:
        return optascan_error_response(error)

    @app.exception_handler(HTTPProblem)
    async def problem(_: Request, error: HTTPProblem) -> JSONResponse:
        return problem_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:  # 404, 405 from routing
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(error_body(str(error.detail), code, error.status_code), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(error_body(f"{where or 'body'}: {first.get('msg', 'invalid request body')}",
                                       "invalid_body", 422, param=where or None), status_code=422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key"])
    hosts = settings.allowed_hosts or default_allowed_hosts(settings.host)
    app.add_middleware(Guard, allowed_hosts=hosts, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       cors_origins=settings.cors_origins)
    return app


def _version() -> str:
    from .. import __version__

    return __version__
