"""Safe defaults as one ASGI middleware: Host allowlist, API key, request body cap.

- Host: a page on another site can make the browser talk to 127.0.0.1 through a DNS name it controls
  (DNS rebinding, as in Ollama's CVE-2024-28224). Only Host headers naming this machine, or ones the user
  listed, are served.
- API key: when set, every route but ``/health`` and the page's static files needs ``Authorization: Bearer KEY``
  (or ``X-API-Key``); the page takes the key from ``/?api_key=KEY`` and sends it with each API call.
- Cross-site requests: a state-changing request whose Origin is neither this server nor a listed CORS origin
  is refused (a foreign page can POST without a preflight).
- Body cap: declared and streamed sizes both count; a bigger body is refused with 413 before it is read.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .errors import HTTPProblem, problem_response

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/health",)


def host_name(header: str) -> str:
    """'example.com:8080' → 'example.com'; '[::1]:8080' → '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, allowed: Iterable[str]) -> bool:
    if not header:
        return False
    name = host_name(header)
    allowed = [a.lower() for a in allowed]
    if "*" in allowed or name in allowed:
        return True
    return any(a.startswith(".") and name.endswith(a) for a in allowed)


def default_allowed_hosts(bind_host: str) -> list[str]:
    hosts = list(LOCAL_NAMES)
    try:
        if not ipaddress.ip_address(bind_host).is_unspecified:
            hosts.append(bind_host)
    except ValueError:
        hosts.append(bind_host)  # a name the user bound to
    return hosts


class Guard:
    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], api_key: str | None, max_body_bytes: int,
                 cors_origins: list[str] | None = None) -> None:
        self.app, self.allowed_hosts, self.api_key, self.max_body_bytes = app, allowed_hosts, api_key, max_body_bytes
        self.cors_origins = set(cors_origins or ())

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self._check(scope, headers)
            if "content-length" not in headers and scope["method"] in UNSAFE_METHODS:
                receive = await self._buffered(receive)  # a chunked body: counted before the app sees it
        except HTTPProblem as problem:
            await problem_response(problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> None:
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            raise HTTPProblem(400, f"host {headers.get('host')!r} is not allowed; start the server with "
                                   "--allowed-host NAME to serve it", "host_not_allowed")
        origin = headers.get("origin")
        if origin and scope["method"] in UNSAFE_METHODS and not self._same_site(origin, headers.get("host", "")):
            # A page on another site may POST here without a preflight (no body, or a "simple" one):
            # changes are accepted only from this server's own page and the listed CORS origins.
            raise HTTPProblem(403, f"cross-site request from {origin} refused; list it with --cors-origin",
                              "cross_site_refused")
        if self.api_key and not _is_open(scope):
            given = headers.get("x-api-key") or ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                raise HTTPProblem(401, "a valid API key is required (Authorization: Bearer KEY)", "invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise HTTPProblem(413, f"the request body is {int(declared):,} bytes; this server takes at most "
                                   f"{self.max_body_bytes:,} (--max-body-mb)", "body_too_large")

    def _same_site(self, origin: str, host: str) -> bool:
        from urllib.parse import urlsplit

        return origin in self.cors_origins or urlsplit(origin).netloc.lower() == host.strip().lower()

    async def _buffered(self, receive: Callable) -> Callable:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                raise HTTPProblem(413, f"the request body exceeds {self.max_body_bytes:,} bytes (--max-body-mb)",
                                  "body_too_large")
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        return replay


UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _is_open(scope: Scope) -> bool:
    """/health, and the page's own files (static, no data): a browser cannot send a key header when it opens a
    URL, so the page loads without one and sends the key (from ?api_key=) with every API call it makes."""
    path, method = scope["path"], scope["method"]
    if path in OPEN_PATHS or method == "OPTIONS":
        return True
    return method in ("GET", "HEAD") and (path == "/" or path.startswith("/static/"))
