"""A local, Hugging Face Hub-compatible HTTP server for tests, with fault injection (stdlib only).

It serves local directories as model repos to the REAL ``huggingface_hub`` client (checked against 2.4):

* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` -- model info (``?blobs=true``, sent by
  ``model_info(files_metadata=True)``, adds ``size``/``blobId``/``lfs`` to ``siblings``);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`` -- the listing ``snapshot_download`` uses;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{filename}`` -- ``ETag`` (sha256 for LFS files, git blob sha1 otherwise),
  ``X-Repo-Commit`` (required), ``Content-Length``, ``Accept-Ranges``; LFS files also get ``X-Linked-Etag`` and
  ``X-Linked-Size``. ``Range: bytes=a-[b]`` gets a 206 with ``Content-Range``. No Xet headers, so plain HTTP is used.

Pointing the client here: ``huggingface_hub.constants`` reads ``HF_ENDPOINT`` *and* ``HF_HUB_OFFLINE`` once, at
import time, so setting the env vars inside a test is too late. Either pass ``endpoint=server.url`` to
``snapshot_download``/``hf_hub_download``/``HfApi`` (and still turn offline mode off), or call
``server.patch_client(monkeypatch)``, which sets the env vars (for subprocesses) and patches ``constants.ENDPOINT``,
``constants.HUGGINGFACE_CO_URL_TEMPLATE`` and ``constants.HF_HUB_OFFLINE`` (read at call time by the client).
Code doing ``from huggingface_hub.constants import ENDPOINT`` keeps the old value and must take an endpoint.

Faults are flipped per file path (the name inside the repo) through ``server.faults[path]``, see `FileFaults`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_REVISION = "ec764984c87e707bc16b665f4777671f0205bcc8"  # a 40-hex commit sha
LFS_THRESHOLD = 1 << 20  # files over this size (or *.safetensors) are treated as LFS files


@dataclass
class FileFaults:
    """Faults for one file; tests mutate these while the server runs."""

    drop_after: int | None = None  # close the connection after this many body bytes
    drops: int | None = None  # how many responses `drop_after` applies to (None: all of them)
    corrupt: bool = False  # serve wrong bytes of the right length (every byte inverted)
    trickle_bps: int | None = None  # send the body at about this many bytes per second
    ignore_range: bool = False  # answer 200 with the full body even when a Range is asked
    status: int | None = None  # answer HEAD and GET with this status (e.g. 401, 403, 404, 500)
    error_code: str | None = None  # X-Error-Code sent with `status`, e.g. "GatedRepo", "RepoNotFound"


@dataclass
class Faults:
    files: dict[str, FileFaults] = field(default_factory=dict)
    info_status: int | None = None  # force this status on the info and tree endpoints
    info_error_code: str | None = None
    extra_siblings: dict[str, bytes] = field(default_factory=dict)  # extra (e.g. malicious) names, served too

    def __getitem__(self, path: str) -> FileFaults:
        return self.files.setdefault(path, FileFaults())

    def clear(self) -> None:
        self.files.clear()
        self.extra_siblings.clear()
        self.info_status = self.info_error_code = None


@dataclass(frozen=True)
class _Blob:
    data: bytes
    lfs: bool

    @functools.cached_property
    def sha256(self) -> str:  # cached: a benchmark's 1 GB file must not be re-hashed on every request
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:  # the git-lfs pointer file the repo's git tree holds for an LFS file
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @functools.cached_property
    def blob_id(self) -> str:  # git blob sha1 of what git stores (the pointer, for LFS files)
        stored = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def meta(self, name: str, *, tree: bool) -> dict:
        lfs = {"size": len(self.data), "pointerSize": len(self.pointer)}
        if tree:
            entry = {"type": "file", "path": name, "size": len(self.data), "oid": self.blob_id}
            return entry | ({"lfs": lfs | {"oid": self.sha256}} if self.lfs else {})
        entry = {"rfilename": name, "size": len(self.data), "blobId": self.blob_id}
        return entry | ({"lfs": lfs | {"sha256": self.sha256}} if self.lfs else {})


def _load(root: Path) -> dict[str, _Blob]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            files[p.relative_to(root).as_posix()] = _Blob(data, len(data) > LFS_THRESHOLD or p.suffix == ".safetensors")
    return files


class HubServer:
    """Serve ``repos`` (repo_id -> local directory, read once at construction) on 127.0.0.1 at a free port."""

    def __init__(self, repos: dict[str, Path], *, revision: str = DEFAULT_REVISION):
        self.repos = {repo_id: _load(Path(path)) for repo_id, path in repos.items()}
        self.revision = revision
        self.faults = Faults()
        self.bytes_served: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def patch_client(self, monkeypatch) -> None:
        """Point the already-imported huggingface_hub at this server and turn its offline mode off."""
        from huggingface_hub import constants

        monkeypatch.setenv("HF_ENDPOINT", self.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()

    def files(self, repo_id: str) -> dict[str, _Blob]:
        extra = {name: _Blob(data, False) for name, data in self.faults.extra_siblings.items()}
        return self.repos[repo_id] | extra

    # -- request handling (runs on the server's threads) --

    def _handle(self, h: _Handler, method: str) -> None:
        with self._lock:
            self.requests.append((method, h.path, dict(h.headers)))
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        for repo_id in sorted(self.repos, key=len, reverse=True):
            api = f"/api/models/{repo_id}"
            if path == api or path.startswith(api + "/"):
                return self._api(h, repo_id, path[len(api):], query)
            resolve = f"/{repo_id}/resolve/"
            if path.startswith(resolve):
                rev, _, name = path[len(resolve):].partition("/")
                return self._resolve(h, method, repo_id, unquote(rev), unquote(name))
        _send_error(h, 404, "RepoNotFound" if path.startswith("/api/models/") else None)

    def _check_revision(self, h: _Handler, rev: str) -> bool:
        if rev in ("main", self.revision):
            return True
        _send_error(h, 404, "RevisionNotFound")
        return False

    def _api(self, h: _Handler, repo_id: str, tail: str, query: dict[str, str]) -> None:
        if self.faults.info_status is not None:
            return _send_error(h, self.faults.info_status, self.faults.info_error_code)
        files = self.files(repo_id)
        if tail in ("", "/") or tail.startswith("/revision/"):
            rev = unquote(tail[len("/revision/"):]) if tail.startswith("/revision/") else "main"
            if not self._check_revision(h, rev):
                return
            blobs = query.get("blobs", "").lower() in ("1", "true")
            siblings = [blob.meta(n, tree=False) if blobs else {"rfilename": n} for n, blob in files.items()]
            info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                    "author": repo_id.split("/")[0], "sha": self.revision, "private": False, "gated": False,
                    "disabled": False, "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                    "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
                    "siblings": siblings}
            return _send_json(h, info)
        if tail.startswith("/tree/"):
            rev, _, sub = tail[len("/tree/"):].partition("/")
            if not self._check_revision(h, unquote(rev)):
                return
            prefix, recursive = unquote(sub).strip("/"), query.get("recursive", "").lower() in ("1", "true")
            dirs = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
            entries = [{"type": "directory", "path": d, "size": 0, "oid": hashlib.sha1(d.encode()).hexdigest()}
                       for d in dirs] + [blob.meta(n, tree=True) for n, blob in files.items()]

            def wanted(p: str) -> bool:
                rel = p[len(prefix) + 1:] if prefix else p
                inside = not prefix or p.startswith(prefix + "/")
                return inside and (recursive or "/" not in rel)

            return _send_json(h, [e for e in entries if wanted(e["path"])])
        _send_error(h, 404, None)

    def _resolve(self, h: _Handler, method: str, repo_id: str, rev: str, name: str) -> None:
        fault = self.faults.files.get(name, FileFaults())
        commit = {"X-Repo-Commit": self.revision}
        if fault.status is not None:
            return _send_error(h, fault.status, fault.error_code, commit)
        if not self._check_revision(h, rev):
            return
        blob = self.files(repo_id).get(name)
        if blob is None:
            return _send_error(h, 404, "EntryNotFound", commit)
        size, start, end = len(blob.data), 0, len(blob.data)
        headers = commit | {"ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes",
                            "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)}
        status, wanted = 200, h.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and not fault.ignore_range:
            first, _, last = wanted[len("bytes="):].split(",")[0].partition("-")
            if not first:  # suffix range: the last N bytes
                start = max(0, size - int(last))
            else:
                start, end = int(first), min(size, int(last) + 1) if last else size
            if start >= size:
                return _send_error(h, 416, None, commit | {"Content-Range": f"bytes */{size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{size}"
        h.send_response(status)
        for key, value in (headers | {"Content-Length": str(end - start)}).items():
            h.send_header(key, value)
        h.end_headers()
        if method == "GET":
            self._send_body(h, name, blob.data[start:end], fault)

    def _send_body(self, h: _Handler, name: str, body: bytes, fault: FileFaults) -> None:
        if fault.corrupt:
            body = bytes(b ^ 0xFF for b in body)
        limit = len(body)
        with self._lock:
            if fault.drop_after is not None and fault.drops != 0:
                limit = min(limit, fault.drop_after)
                if fault.drops is not None:
                    fault.drops -= 1
        chunk = max(1, fault.trickle_bps // 20) if fault.trickle_bps else 64 * 1024
        sent = 0
        try:
            while sent < limit:
                piece = body[sent:min(limit, sent + chunk)]
                with self._lock:  # counted before the write, so a client never holds bytes not yet counted
                    self.bytes_served[name] = self.bytes_served.get(name, 0) + len(piece)
                h.wfile.write(piece)
                sent += len(piece)
                if fault.trickle_bps:
                    time.sleep(len(piece) / fault.trickle_bps)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
            return
        if limit < len(body):  # simulated network drop: the client sees fewer bytes than Content-Length
            h.close_connection = True
            h.wfile.flush()


def _send_json(h: BaseHTTPRequestHandler, obj) -> None:
    body = json.dumps(obj).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def _send_error(h: BaseHTTPRequestHandler, status: int, code: str | None, headers: dict | None = None) -> None:
    body = json.dumps({"error": code or f"HTTP {status}"}).encode()
    h.send_response(status)
    for key, value in {**({"X-Error-Code": code} if code else {}), **(headers or {})}.items():
        h.send_header(key, value)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every response has a Content-Length

    def do_GET(self) -> None:  # noqa: N802
        self.server.hub._handle(self, "GET")  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.hub._handle(self, "HEAD")  # type: ignore[attr-defined]

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass
