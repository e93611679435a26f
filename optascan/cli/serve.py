"""``optascan serve``: the OpenAI-compatible API, the flow and model endpoints, and the web page."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import DEFAULT_MODEL, add_runtime_options


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(
        name, help="serve the OpenAI-compatible API and the web page",
        description="Serve models over HTTP: POST /v1/chat/completions (OpenAI wire format, SSE streaming), "
                    "GET /v1/models, the Opta flow and model management under /api, /health, /metrics, and a web "
                    "page at /. Binds 127.0.0.1 and checks the Host header by default.",
        epilog="example: optascan serve --model demo --port 11435   then open http://127.0.0.1:11435/")
    p.add_argument("--model", "-m", action="append", default=None,
                   help=f"a model to serve (repeatable; the first is the default; default: {DEFAULT_MODEL}); "
                        "models in the local cache are served too")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=11435, help="port (default: 11435)")
    p.add_argument("--api-key", default=os.environ.get("OPTASCAN_API_KEY"),
                   help="require this key on every route but /health (default: $OPTASCAN_API_KEY, none)")
    p.add_argument("--allowed-host", action="append", default=None,
                   help="a Host header name to serve besides this machine's (repeatable; '.example.com' matches "
                        "subdomains; '*' turns the check off)")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="a browser origin allowed to call the API (repeatable; default: none)")
    p.add_argument("--allow-image-urls", action="store_true",
                   help="fetch http(s) image URLs (private and loopback addresses stay refused)")
    p.add_argument("--max-body-mb", type=float, default=32, help="largest request body (default: 32)")
    p.add_argument("--keep-alive", type=float, default=300, help="seconds an idle model stays loaded (default: 300)")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting per model before 429 (default: 32)")
    add_runtime_options(p, dtype=False)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..server.app import create_app
    from ..server.service import MiB, ServerSettings

    settings = ServerSettings(
        host=args.host, port=args.port, models=args.model or [DEFAULT_MODEL], api_key=args.api_key or None,
        allowed_hosts=args.allowed_host, cors_origins=args.cors_origin, max_body_bytes=int(args.max_body_mb * MiB),
        allow_image_urls=args.allow_image_urls, keep_alive_s=args.keep_alive, max_queue=args.max_queue,
        device=args.device, mode=args.mode, engine=args.engine)
    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    _DrainingServer(config, app.state.service).run()
    return 0


class _DrainingServer:
    """uvicorn's server, but SIGTERM / Ctrl-C first refuse new work and cancel running generations, so open
    streams end with their final chunk at once instead of being cut when the graceful wait runs out."""

    def __new__(cls, config, service):
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                service.begin_drain()
                super().handle_exit(sig, frame)

        return Server(config)
