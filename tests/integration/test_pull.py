"""optascan pull against a local hub-compatible server, with the real huggingface_hub client's conventions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import optascan
from optascan.engine.cancel import CancelToken
from optascan.errors import (
    InsufficientDiskSpace,
    IntegrityError,
    ModelAccessDenied,
    ModelNotFound,
    PullFailed,
    UnsafeFileName,
)
from optascan.models.integrity import sha256_of, verify_snapshot
from optascan.models.plan import Phase
from optascan.models.pull import pull
from optascan.testing.hub_server import HubServer

REPO = "tiny-org/tiny-llava"
WEIGHTS = "model.safetensors"


@pytest.fixture
def hub(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with HubServer({REPO: tiny_dir("llava")}) as server:
        server.patch_client(monkeypatch)
        server.cache = cache
        server.source = tiny_dir("llava")
        yield server


def blobs(cache: Path) -> list[Path]:
    folder = cache / ("models--" + REPO.replace("/", "--")) / "blobs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_pull_installs_identical_files_with_monotonic_progress_and_works_offline_after(hub, monkeypatch):
    events = []
    result = pull(REPO, on_event=events.append)
    assert not result.cancelled
    for source in hub.source.iterdir():
        assert (result.path / source.name).read_bytes() == source.read_bytes()
    phases = [e.phase for e in events]
    assert phases[0] is Phase.CHECKING and phases[-1] is Phase.DONE and Phase.VERIFYING in phases
    assert [e.bytes for e in events] == sorted(e.bytes for e in events) and events[-1].bytes == events[-1].total
    assert verify_snapshot(result.path).ok
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    served = len(hub.requests)
    with optascan.load(REPO, device="cpu") as engine:  # from the cache, no network
        assert engine.generate(prompt="hi", max_tokens=2, ignore_eos=True).usage.completion_tokens == 2
    assert len(hub.requests) == served
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert pull(REPO).downloaded_bytes == 0  # online again: pulling again fetches nothing


def test_disk_space_is_checked_before_a_byte_is_written(hub, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InsufficientDiskSpace) as info:
        pull(REPO)
    assert info.value.free_bytes == 1000 and info.value.needed_bytes > 1000
    assert not any("/resolve/" in path for _, path, _ in hub.requests) and blobs(hub.cache) == []


def test_wrong_bytes_fail_verification_name_the_file_and_leave_nothing(hub):
    hub.faults[WEIGHTS].corrupt = True
    with pytest.raises(IntegrityError, match=WEIGHTS):
        pull(REPO)
    assert not any(b.name.endswith(".incomplete") or len(b.name) == 64 for b in blobs(hub.cache))


def test_a_dropped_connection_resumes_from_the_bytes_on_disk(hub):
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].drop_after = size // 3
    hub.faults[WEIGHTS].drops = 1
    with pytest.raises(PullFailed):
        pull(REPO)
    partial = [b for b in blobs(hub.cache) if b.name.endswith(".incomplete")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < size
    on_disk = partial[0].stat().st_size
    hub.bytes_served.clear()
    result = pull(REPO)
    assert hub.bytes_served[WEIGHTS] == size - on_disk  # only the rest was sent
    assert sha256_of(result.path / WEIGHTS) == sha256_of(hub.source / WEIGHTS)


def test_a_server_that_ignores_range_still_gives_a_correct_file(hub):
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].drop_after = size // 2
    hub.faults[WEIGHTS].drops = 1
    with pytest.raises(PullFailed):
        pull(REPO)
    hub.faults[WEIGHTS].ignore_range = True
    result = pull(REPO)
    assert sha256_of(result.path / WEIGHTS) == sha256_of(hub.source / WEIGHTS)


@pytest.mark.parametrize("status, error", [(401, ModelAccessDenied), (403, ModelAccessDenied), (404, ModelNotFound),
                                           (500, PullFailed)])
def test_hub_errors_become_typed_errors(hub, status, error):
    hub.faults.info_status = status
    hub.faults.info_error_code = {401: "GatedRepo", 404: "RepoNotFound"}.get(status)
    with pytest.raises(error) as info:
        pull(REPO)
    if error is ModelAccessDenied:
        assert "HF_TOKEN" in info.value.hint


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "a\\b.bin"])
def test_malicious_file_names_are_refused_before_anything_is_written(hub, name):
    hub.faults.extra_siblings[name] = b"pwned"
    with pytest.raises(UnsafeFileName):
        pull(REPO)
    assert blobs(hub.cache) == []


def test_cancel_leaves_resumable_state(hub):
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].trickle_bps = size * 2  # about half a second for the weights
    token = CancelToken()

    def cancel_midway(event):
        if event.file == WEIGHTS and event.file_bytes > size // 4:
            token.cancel()

    result = pull(REPO, cancel=token, on_event=cancel_midway)
    assert result.cancelled
    partial = [b for b in blobs(hub.cache) if b.name.endswith(".incomplete")]
    assert len(partial) == 1
    hub.faults[WEIGHTS].trickle_bps = None
    assert not pull(REPO).cancelled


def test_offline_mode_touches_no_network(hub, monkeypatch):
    monkeypatch.setenv("OPTASCAN_OFFLINE", "1")
    with pytest.raises(PullFailed, match="offline"):
        pull(REPO)
    assert hub.requests == []
    with pytest.raises(ModelNotFound, match="not in the local cache") as info:
        optascan.load(REPO, device="cpu")
    assert f"optascan pull {REPO}" in info.value.hint


def _pull_process(hub) -> subprocess.Popen:
    code = f"from optascan.models.pull import pull; print(pull({REPO!r}).commit)"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(hub.cache)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_pulling_at_once_end_with_one_correct_copy(hub):
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].trickle_bps = size  # about a second, so the two overlap
    procs = [_pull_process(hub), _pull_process(hub)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    snapshot = next((hub.cache / ("models--" + REPO.replace("/", "--")) / "snapshots").iterdir())
    assert verify_snapshot(snapshot).ok and sha256_of(snapshot / WEIGHTS) == sha256_of(hub.source / WEIGHTS)
    assert hub.bytes_served[WEIGHTS] == size  # the lock made the second wait, not download again


def test_kill_9_mid_download_then_pull_again_downloads_only_the_rest(hub):
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].trickle_bps = size // 4  # about four seconds
    proc = _pull_process(hub)
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline:
        partial = [b for b in blobs(hub.cache) if b.name.endswith(".incomplete")]
        if partial and partial[0].stat().st_size > size // 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    on_disk = partial[0].stat().st_size  # measured after the kill: what the next pull finds
    assert 0 < on_disk < size
    hub.faults[WEIGHTS].trickle_bps = None
    asked = len(hub.requests)
    result = pull(REPO)
    # the killed connection's server thread may still be counting, so check what the new pull asked for
    ranges = [headers.get("Range") for method, path, headers in hub.requests[asked:] if path.endswith(WEIGHTS)]
    assert ranges == [f"bytes={on_disk}-"]
    assert verify_snapshot(result.path).ok


def test_verify_and_rm_commands(hub):
    result = pull(REPO)
    env = {**os.environ, "HF_HUB_CACHE": str(hub.cache)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "optascan", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    assert cli("verify", REPO).returncode == 0
    import json

    row = next(r for r in json.loads(cli("models", "--json").stdout) if r["name"] == REPO)
    assert row["installed"] and row["memory_bytes"] == optascan.estimate_memory(result.path).total_bytes
    blob = (result.path / WEIGHTS).resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    bad = cli("verify", REPO)
    assert bad.returncode == 1 and WEIGHTS in bad.stderr and "optascan pull" in bad.stderr
    assert cli("rm", REPO).returncode == 0
    assert not (hub.cache / ("models--" + REPO.replace("/", "--"))).exists()
    assert cli("rm", REPO).returncode == 1


def test_pull_events_iterator_and_closing_it_cancels(hub):
    from optascan.models.pull import pull_events

    events = list(pull_events(REPO))
    assert events[0].phase is Phase.CHECKING and events[-1].phase is Phase.DONE
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].trickle_bps = size // 2
    import shutil

    shutil.rmtree(hub.cache)
    stream = pull_events(REPO)
    for event in stream:
        if event.file == WEIGHTS and event.file_bytes > 0:
            break
    stream.close()  # cancels: the partial file stays for a resume
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(b.name.endswith(".incomplete") for b in blobs(hub.cache)):
        time.sleep(0.05)
    assert any(b.name.endswith(".incomplete") for b in blobs(hub.cache))


def test_the_token_is_sent_but_never_printed(hub, monkeypatch):
    from huggingface_hub import constants

    secret = "hf_" + "s3cr3t" * 6
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hub.cache / "no-token-file"), raising=False)
    hub.faults.info_status = 401
    hub.faults.info_error_code = "GatedRepo"
    with pytest.raises(ModelAccessDenied) as info:
        pull(REPO)
    assert secret not in str(info.value) and secret not in repr(info.value.__cause__)
    sent = [value for _, _, headers in hub.requests for key, value in headers.items() if key.lower() == "authorization"]
    assert f"Bearer {secret}" in sent


def test_pull_command_shows_forward_only_progress_and_ctrl_c_leaves_a_resumable_pull(hub):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(hub.cache),
           "PYTHONUNBUFFERED": "1"}
    size = (hub.source / WEIGHTS).stat().st_size
    hub.faults[WEIGHTS].trickle_bps = size // 3
    proc = subprocess.Popen([sys.executable, "-m", "optascan", "pull", REPO], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            b.name.endswith(".incomplete") and b.stat().st_size > 0 for b in blobs(hub.cache)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err and "Traceback" not in err
    hub.faults[WEIGHTS].trickle_bps = None
    done = subprocess.run([sys.executable, "-m", "optascan", "pull", REPO], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stderr.splitlines() if line.strip()]
    overall = [float(parts[1].replace(",", "")) for parts in lines]  # "phase  1.2 MB/1.3 MB  ..."
    assert overall == sorted(overall) and lines[-1][0] == "done"
    assert REPO in done.stdout


def test_rm_all_asks_first_unless_yes(hub):
    pull(REPO)
    env = {**os.environ, "HF_HUB_CACHE": str(hub.cache)}
    run = [sys.executable, "-m", "optascan", "rm", "--all"]
    refused = subprocess.run(run, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert refused.returncode == 1 and "nothing deleted" in refused.stdout
    assert (hub.cache / ("models--" + REPO.replace("/", "--"))).exists()
    done = subprocess.run([*run, "--yes"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and f"deleted {REPO}" in done.stdout
    assert not (hub.cache / ("models--" + REPO.replace("/", "--"))).exists()
    with pytest.raises(ModelNotFound, match="ships inside the package"):
        pull("demo")
