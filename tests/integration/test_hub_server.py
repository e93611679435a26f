"""The local Hub server (optascan.testing.hub_server) driven by the REAL huggingface_hub client.

These tests also pin down how the client (2.4) behaves on faults, which `optascan pull` has to live with:
a dropped connection is retried in-process (with a Range request, but only from the last full
DOWNLOAD_CHUNK_SIZE = 10 MiB boundary), an ignored Range restarts from zero, wrong bytes are NOT detected
(no sha256 check), no `.incomplete` file survives a failed download, and a 401 is a plain HfHubHTTPError
unless the server sends `X-Error-Code: GatedRepo`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from optascan.testing.hub_server import HubServer

REPO = "optascan/tiny-llava"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optascan.testing.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint("llava", tmp_path_factory.mktemp("hub") / "src")


@pytest.fixture
def hub(src: Path, monkeypatch: pytest.MonkeyPatch):
    with HubServer({REPO: src}) as server:
        server.patch_client(monkeypatch)  # HF_ENDPOINT + HF_HUB_OFFLINE=0, patched into the imported constants
        yield server


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """http_get sleeps 1 s before each of its 5 resume attempts; skip that (only file_download's `time`)."""

    class _Time:
        sleep = staticmethod(lambda seconds: None)

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(file_download, "time", _Time())


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _resolve_gets(hub: HubServer, name: str) -> list[str | None]:
    """The Range header of each GET of `name` (None: no Range)."""
    return [h.get("Range") for m, p, h in hub.requests if m == "GET" and p.endswith(f"/resolve/main/{name}")]


def test_offline_flag_and_endpoint_are_read_at_import(monkeypatch: pytest.MonkeyPatch):
    before = constants.is_offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if before else "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert constants.is_offline_mode() == before  # env changes after import are not seen...
    assert constants.ENDPOINT != "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", not before)
    assert constants.is_offline_mode() == (not before)  # ...but the module constant is read at call time


def test_snapshot_download_gives_identical_files(hub: HubServer, src: Path, tmp_path: Path):
    folder = Path(snapshot_download(REPO, cache_dir=tmp_path / "cache"))
    assert folder.name == hub.revision
    assert _files(folder) == _files(src)
    for name in _files(src):
        assert (folder / name).read_bytes() == (src / name).read_bytes(), name
    assert not list((tmp_path / "cache").rglob("*.incomplete"))
    paths = [p for _, p, _ in hub.requests]
    assert f"/api/models/{REPO}/revision/main" in paths
    assert f"/api/models/{REPO}/tree/{hub.revision}?recursive=true&expand=false" in paths
    # a second call is served from the cache: only the revision and tree are asked again, no file
    hub.reset_counters()
    assert Path(snapshot_download(REPO, cache_dir=tmp_path / "cache")) == folder
    assert hub.bytes_served == {}


def test_env_var_before_import_is_enough(hub: HubServer, src: Path, tmp_path: Path):
    code = f"from huggingface_hub import hf_hub_download; print(hf_hub_download('{REPO}', 'config.json'))"
    env = os.environ | {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).read_bytes() == (src / "config.json").read_bytes()


def test_model_info_files_metadata(hub: HubServer, src: Path):
    info = HfApi().model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == hub.revision and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == _files(src)
    weights = siblings[WEIGHTS]
    assert weights.lfs is not None and weights.lfs.sha256 == _sha256(src / WEIGHTS)
    assert weights.size == weights.lfs.size == (src / WEIGHTS).stat().st_size
    assert siblings["config.json"].lfs is None
    assert HfApi().model_info(REPO).siblings[0].size is None  # without files_metadata: names only
    assert HfApi().model_info(REPO, revision=hub.revision).sha == hub.revision


def test_head_headers_and_range_request(hub: HubServer, src: Path):
    url = f"{hub.url}/{REPO}/resolve/main/{WEIGHTS}"
    data = (src / WEIGHTS).read_bytes()
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert r.headers["X-Repo-Commit"] == hub.revision
        assert r.headers["Content-Length"] == str(len(data)) and r.headers["Accept-Ranges"] == "bytes"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-1099"})) as r:
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
        assert r.read() == data[100:1100]
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-10"})) as r:
        assert r.read() == data[-10:]
    assert hub.bytes_served == {WEIGHTS: 1010}
    meta = file_download.get_hf_file_metadata(file_download.hf_hub_url(REPO, "config.json"))
    blob = (src / "config.json").read_bytes()
    assert meta.etag == hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()  # git blob sha1 for non-LFS


def test_drop_fails_after_retries_and_leaves_no_incomplete_file(hub: HubServer, tmp_path: Path, no_retry_sleep):
    hub.faults[WEIGHTS].drop_after = 1000  # every response: a 10 MiB read chunk never fills, so no progress
    with pytest.raises(httpx2.RemoteProtocolError, match="peer closed connection"):
        hf_hub_download(REPO, WEIGHTS, cache_dir=tmp_path / "cache")
    assert _resolve_gets(hub, WEIGHTS) == [None] * 6  # first try + 5 resumes, none with a Range
    assert hub.bytes_served == {WEIGHTS: 6000}
    cached = _files(tmp_path / "cache")
    assert not [f for f in cached if "/blobs/" in f or "/snapshots/" in f or f.endswith(".incomplete")], cached


@pytest.mark.parametrize("chunk", [None, 64 * 1024])
def test_resume_after_one_drop(hub: HubServer, src: Path, tmp_path: Path, monkeypatch, no_retry_sleep, chunk):
    size = (src / WEIGHTS).stat().st_size
    if chunk:
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    hub.faults[WEIGHTS].drop_after, hub.faults[WEIGHTS].drops = 200_000, 1
    path = hf_hub_download(REPO, WEIGHTS, cache_dir=tmp_path / "cache")
    assert _sha256(path) == _sha256(src / WEIGHTS)
    if chunk is None:  # default 10 MiB chunks: the 200 kB received were never written, so it starts over
        assert _resolve_gets(hub, WEIGHTS) == [None, None]
        assert hub.bytes_served[WEIGHTS] == 200_000 + size
    else:  # resumes from the last whole chunk written: only the rest is sent again
        kept = 200_000 // chunk * chunk
        assert _resolve_gets(hub, WEIGHTS) == [None, f"bytes={kept}-"]
        assert hub.bytes_served[WEIGHTS] == 200_000 + size - kept


def test_ignored_range_restarts_from_zero(hub: HubServer, src: Path, tmp_path: Path, monkeypatch, no_retry_sleep):
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    fault = hub.faults[WEIGHTS]
    fault.drop_after, fault.drops, fault.ignore_range = 200_000, 1, True
    path = hf_hub_download(REPO, WEIGHTS, cache_dir=tmp_path / "cache")
    assert _sha256(path) == _sha256(src / WEIGHTS)  # the client saw 200 for its Range, truncated and restarted
    assert _resolve_gets(hub, WEIGHTS) == [None, "bytes=196608-"]
    assert hub.bytes_served[WEIGHTS] == 200_000 + (src / WEIGHTS).stat().st_size


def test_wrong_bytes_are_not_detected_by_the_client(hub: HubServer, src: Path, tmp_path: Path):
    hub.faults[WEIGHTS].corrupt = True
    path = Path(hf_hub_download(REPO, WEIGHTS, cache_dir=tmp_path / "cache"))
    expected = _sha256(src / WEIGHTS)
    assert path.resolve().name == expected  # stored under the blob name of the right sha256...
    assert _sha256(path) != expected  # ...with the wrong content: a puller must verify sha256 itself
    assert path.stat().st_size == (src / WEIGHTS).stat().st_size


def test_trickle(hub: HubServer, src: Path, tmp_path: Path):
    hub.faults["config.json"].trickle_bps = 5000
    start = time.monotonic()
    path = hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "cache")
    assert time.monotonic() - start >= 0.8 * (src / "config.json").stat().st_size / 5000
    assert Path(path).read_bytes() == (src / "config.json").read_bytes()


@pytest.mark.parametrize(("code", "error"), [(None, HfHubHTTPError), ("GatedRepo", GatedRepoError)])
def test_401(hub: HubServer, tmp_path: Path, code, error):
    hub.faults[WEIGHTS].status, hub.faults[WEIGHTS].error_code = 401, code
    with pytest.raises(error) as file_err:
        hf_hub_download(REPO, WEIGHTS, cache_dir=tmp_path / "cache")
    hub.faults.info_status, hub.faults.info_error_code = 401, code
    with pytest.raises(error) as info_err:
        snapshot_download(REPO, cache_dir=tmp_path / "cache")
    for err in (file_err.value, info_err.value):
        assert err.response.status_code == 401
        # over http:// a bare 401 is NOT mapped to RepositoryNotFoundError (the client's regex wants https://)
        assert isinstance(err, RepositoryNotFoundError) == (code is not None)


def test_missing_file_and_bad_revision(hub: HubServer, tmp_path: Path):
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("nobody/nothing")


def test_malicious_sibling_names(hub: HubServer, tmp_path: Path):
    names = {"../evil.txt": b"evil", "/etc/passwd": b"root:x:0:0", "a\\b.bin": b"ab"}
    hub.faults.extra_siblings.update(names)
    assert set(names) <= {s.rfilename for s in HfApi().model_info(REPO).siblings}
    for name in ("../evil.txt", "/etc/passwd"):  # refused before any request is made
        with pytest.raises(ValueError, match="Invalid filename"):
            hf_hub_download(REPO, name, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="Invalid filename"):
        snapshot_download(REPO, cache_dir=tmp_path / "cache")
    assert not [p for _, p, _ in hub.requests if "evil" in p or "passwd" in p]
    assert not (tmp_path / "evil.txt").exists()
    # a backslash is NOT refused on POSIX: it becomes one file literally named `a\b.bin` inside the snapshot
    path = Path(hf_hub_download(REPO, "a\\b.bin", cache_dir=tmp_path / "cache"))
    assert path.name == "a\\b.bin" and path.parent.name == hub.revision and path.read_bytes() == b"ab"
