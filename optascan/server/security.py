"""Safe defaults as one ASGI middleware: Host allowlist, API key, request body cap.

- Host: a page on another site can make the browser talk to 127.0.0.1 through a DNS name it controls
  (DNS rebinding, as in Ollama's CVE-2024-28224). Only Host headers naming this machine, or ones the user
  listed, are served.
- API key: when set, every route but ``/health`` needs ``Authorization: Bearer KEY`` (or ``X-API-Key``); the
  page and its files also take ``?api_key=KEY``, since a browser opening a URL cannot send a header.
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
    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.allowed_hosts, self.api_key, self.max_body_bytes = app, allowed_hosts, api_key, max_body_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self._check(scope, headers)
        except HTTPProblem as problem:
            await problem_response(problem)(scope, receive, send)
            return
        await self.app(scope, self._capped(receive), send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> None:
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            raise HTTPProblem(400, f"host {headers.get('host')!r} is not allowed; start the server with "
                                   "--allowed-host NAME to serve it", "host_not_allowed")
        if self.api_key and scope["path"] not in OPEN_PATHS and scope["method"] != "OPTIONS":
            given = headers.get("x-api-key") or ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            elif scope["method"] == "GET" and (scope["path"] == "/" or scope["path"].startswith("/static/")):
                given = _query_key(scope)  # a browser opening the page cannot send a header: /?api_key=KEY
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                raise HTTPProblem(401, "a valid API key is required (Authorization: Bearer KEY)", "invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise HTTPProblem(413, f"the request body is {int(declared):,} bytes; this server takes at most "
                                   f"{self.max_body_bytes:,} (--max-body-mb)", "body_too_large")

    def _capped(self, receive: Callable) -> Callable:
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPProblem(413, f"the request body exceeds {limit:,} bytes (--max-body-mb)",
                                      "body_too_large")
            return message

        return capped


def _query_key(scope: Scope) -> str:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", [""])
    return values[0]
