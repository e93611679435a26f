"""A guarded http(s) fetcher for image URLs (server-side request forgery is the threat).

Every hop, redirects included, resolves the host once, refuses any address that is not globally routable
(loopback, private, link-local — where cloud metadata services live —, carrier-grade NAT, multicast,
reserved) unless private addresses are allowed, and then connects to exactly the address it checked, so a
DNS answer cannot change between the check and the connection. Bodies are capped in bytes and time.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from ..errors import ImageFetchError, ImageTooLarge

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024


def fetch_bytes(url: str, *, max_bytes: int, timeout_s: float, allow_private: bool = False) -> bytes:
    """GET ``url`` and return its body; typed errors for refused addresses, limits and failures."""
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageFetchError(f"only http(s) image URLs are fetched, not {url[:100]!r}")
        address = _vetted_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                  allow_private)
        status, location, body = _get(parts, address, max_bytes, deadline)
        if status in _REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise ImageFetchError(f"fetching {_short(url)} answered HTTP {status}",
                                  recoverable=status in (408, 429) or status >= 500)
        return body
    raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects fetching the image")


def is_forbidden(address: str) -> bool:
    """True for any address that is not globally routable (IPv4-mapped IPv6 is judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _vetted_address(host: str, port: int, allow_private: bool) -> tuple[str, int]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise ImageFetchError(f"cannot resolve the image host {host!r}: {err}") from err
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        refused = [a for a in addresses if is_forbidden(a)]
        if refused:  # one bad answer is enough: never pick "the good one" of a mixed set
            raise ImageFetchError(f"refused to fetch from {host!r}: {refused[0]} is not a public address",
                                  hint="image URLs must point at public hosts", recoverable=False)
    return addresses[0], port


def _get(parts, address: tuple[str, int], max_bytes: int, deadline: float) -> tuple[int, str | None, bytes]:
    timeout = max(0.05, deadline - time.monotonic())
    conn = (_PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP)(parts.hostname, address, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers={"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "image/*",
                                           "User-Agent": "optascan"})
        response = conn.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise ImageTooLarge(f"the image at {_short(parts.geturl())} is {int(length):,} bytes; the limit is "
                                f"{max_bytes:,}")
        chunks, total = [], 0
        while chunk := response.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise ImageTooLarge(f"the image at {_short(parts.geturl())} is over the {max_bytes:,}-byte limit")
            if time.monotonic() > deadline:
                raise ImageFetchError("the image download timed out", recoverable=True)
            chunks.append(chunk)
        return 200, None, b"".join(chunks)
    except (OSError, http.client.HTTPException) as err:
        raise ImageFetchError(f"could not fetch {_short(parts.geturl())}: {err}", recoverable=True) from err
    finally:
        conn.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever DNS says now."""

    def __init__(self, host: str, address: tuple[str, int], timeout: float) -> None:
        super().__init__(host, address[1], timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self._address, self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
