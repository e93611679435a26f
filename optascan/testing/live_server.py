"""A real optascan server on 127.0.0.1 (free port) in a background thread, for tests and benchmarks.

    with LiveServer(ServerSettings(models=["demo"])) as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from ..server.app import create_app
from ..server.service import ServerSettings, Service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, settings: ServerSettings, service: Service | None = None) -> None:
        settings.port = settings.port if settings.port != 11435 else free_port()
        self.settings = settings
        self.app = create_app(settings, service)
        self.service = self.app.state.service
        self.url = f"http://127.0.0.1:{settings.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port,
                                                     log_level="warning", timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, name="optascan-live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
