"""The guarded URL fetcher against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from optascan import ImageFetchError, ImageTooLarge
from optascan.images.fetch import fetch_bytes, is_forbidden
from optascan.images.intake import IntakeSettings
from optascan.images.prepare import prepare_image


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (0, 200, 0)).save(buf, format="PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    routes: dict = {}
    hits: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.hits = []
    Handler.routes = {
        "/photo.png": (200, {"Content-Type": "image/png"}, png()),
        "/hop": (302, {"Location": "/photo.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-loopback": (302, {"Location": f"http://127.0.0.2:{httpd.server_address[1]}/photo.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big": (200, {}, b"x" * 5000),
        "/gone": (500, {}, b"oops"),
    }
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base
    httpd.shutdown()
    httpd.server_close()


def test_loopback_private_link_local_and_metadata_addresses_are_refused_by_default(server):
    for address in ("127.0.0.1", "10.0.0.8", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.100.100.200",
                    "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"):
        assert is_forbidden(address), address
    assert not is_forbidden("8.8.8.8") and not is_forbidden("2606:4700:4700::1111")
    with pytest.raises(ImageFetchError, match="not a public address") as info:
        fetch_bytes(server + "/photo.png", max_bytes=10_000, timeout_s=5)
    assert not info.value.recoverable
    assert Handler.hits == []  # refused before any connection


def test_fetch_works_where_private_hosts_are_allowed_and_follows_redirects(server):
    assert fetch_bytes(server + "/hop", max_bytes=10_000, timeout_s=5, allow_private=True) == png()
    settings = IntakeSettings(allow_urls=True, allow_private_urls=True)
    assert prepare_image(server + "/photo.png", settings=settings).size == (32, 16)


def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting(server, monkeypatch):
    import optascan.images.fetch as fetch

    real_vet = fetch._vetted_address
    # the first hop (our test server) is allowed; every later hop gets the default, strict check
    hops = iter([True])
    monkeypatch.setattr(fetch, "_vetted_address",
                        lambda host, port, allow: real_vet(host, port, next(hops, False)))
    with pytest.raises(ImageFetchError, match="169.254.169.254"):
        fetch_bytes(server + "/to-metadata", max_bytes=10_000, timeout_s=5)
    hops = iter([True])
    with pytest.raises(ImageFetchError, match="127.0.0.2"):
        fetch_bytes(server + "/to-loopback", max_bytes=10_000, timeout_s=5)
    assert Handler.hits == ["/to-metadata", "/to-loopback"]


def test_byte_cap_redirect_loops_and_http_errors_are_typed(server):
    with pytest.raises(ImageTooLarge):
        fetch_bytes(server + "/big", max_bytes=1000, timeout_s=5, allow_private=True)
    with pytest.raises(ImageFetchError, match="redirects"):
        fetch_bytes(server + "/loop", max_bytes=1000, timeout_s=5, allow_private=True)
    with pytest.raises(ImageFetchError, match="HTTP 500") as info:
        fetch_bytes(server + "/gone", max_bytes=1000, timeout_s=5, allow_private=True)
    assert info.value.recoverable
    with pytest.raises(ImageFetchError, match="http"):
        fetch_bytes("ftp://example.com/a.png", max_bytes=1000, timeout_s=5)


def test_a_server_that_never_answers_times_out(monkeypatch):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        with pytest.raises(ImageFetchError) as info:
            fetch_bytes(f"http://127.0.0.1:{listener.getsockname()[1]}/x", max_bytes=1000, timeout_s=0.5,
                        allow_private=True)
        assert info.value.recoverable
    finally:
        listener.close()
