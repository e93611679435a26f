"""The ``optascan`` command as a user runs it: a real subprocess on a tiny checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image


def optascan(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optascan", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "shelf.jpg"
    Image.new("RGB", (120, 80), (30, 160, 60)).save(path)
    return str(path)


def test_version_and_help():
    assert optascan("--version").stdout.strip().startswith("optascan ")
    out = optascan("scan", "--help").stdout
    for option in ("--model", "--max-tokens", "--temperature", "--seed", "--json", "Ctrl-C"):
        assert option in out


def test_json_output_has_text_reason_model_usage_and_timings(tiny_dir, photo_path):
    run = optascan("scan", "--model", str(tiny_dir("llava")), photo_path, "What is this?", "--max-tokens", "6",
                   "--ignore-eos", "--seed", "3", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["finish_reason"] == "length" and data["model"] == str(tiny_dir("llava"))
    assert data["usage"]["completion_tokens"] == 6 and data["usage"]["image_tokens"] == 16
    assert set(data["timings"]) == {"queue_s", "preprocess_s", "ttft_s", "decode_tokens_per_s", "total_s"}
    assert data["text"]
    assert data["engine"]["backend"] == "hf" and "for CUDA" in data["engine"]["choice"]  # auto, on this CPU
    streamed = optascan("scan", "--model", str(tiny_dir("llava")), photo_path, "What is this?", "--max-tokens",
                        "6", "--ignore-eos", "--seed", "3")
    assert streamed.stdout.rstrip("\n") == data["text"]  # streamed text is the same answer


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model", "hi"], "not a local directory"),
    (["--model", "{llama_text}", "{photo}", "hi"], "text-only"),
    (["--model", "{llava}", "/no/such.jpg", "hi"], "image not found"),
    (["--model", "{llava}", "hi", "--max-tokens", "0"], "max_tokens"),
])
def test_errors_print_one_clear_line_and_exit_non_zero(tiny_dir, photo_path, args, message):
    args = [a.format(llama_text=tiny_dir("llama_text"), llava=tiny_dir("llava"), photo=photo_path) for a in args]
    run = optascan("scan", *args)
    assert run.returncode == 1
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_ctrl_c_cancels_prints_the_partial_answer_and_exits_130(tiny_dir, photo_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "optascan", "scan", "--model", str(tiny_dir("llava")), photo_path, "Describe",
         "--max-tokens", "100000", "--ignore-eos"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    received = b""
    deadline = time.monotonic() + 60
    while len(received) < 20 and time.monotonic() < deadline:
        received += os.read(proc.stdout.fileno(), 64)  # the answer is streaming
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert len(received) >= 20 and (received + rest).startswith(received)
    assert b"cancelled" in err and b"Traceback" not in err


def test_status_line_on_a_terminal_shows_phase_tokens_and_speed(tiny_dir, photo_path):
    import pty

    leader, follower = pty.openpty()  # stderr is a terminal, stdout a pipe: the live line runs to the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "optascan", "scan", "--model", str(tiny_dir("llava")), photo_path, "Describe",
         "--max-tokens", "300", "--ignore-eos"],
        stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    text = screen.decode("utf-8", errors="replace")
    assert proc.returncode == 0 and out
    assert "loading model" in text and "prefill" in text
    assert "generating · " in text and "/300 tokens" in text and "tok/s" in text
    assert "done · 300/300 tokens" in text  # the summary after the answer
