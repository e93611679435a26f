"""The catalog table and what `optascan models` reports from the standard Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from optascan.models.catalog import CATALOG, lookup
from optascan.models.store import installed_models


def fake_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40) -> Path:
    """The layout huggingface_hub writes: blobs by hash, a snapshot of symlinks, refs/main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for i, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:040x}"
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_catalog_rows_are_complete_and_names_unique():
    assert len({e.name for e in CATALOG}) == len(CATALOG)
    assert {"demo", "smolvlm-256m", "smolvlm-500m", "smolvlm-2.2b", "qwen2-vl-2b", "qwen2.5-vl-3b", "qwen2.5-vl-7b",
            "llama-3.2-11b-vision", "gemma-3-4b"} <= {e.name for e in CATALOG}
    for e in CATALOG:
        assert e.download_bytes > 0 and e.params > 0 and e.licence and e.memory_bytes > e.download_bytes
        assert e.repo_id is None or e.repo_id.count("/") == 1
    assert lookup("QWEN2-VL-2B").repo_id == "Qwen/Qwen2-VL-2B-Instruct"
    assert lookup("gemma-3-4b").gated and lookup("nope") is None


def test_installed_models_come_from_the_hf_cache(tmp_path):
    assert installed_models(tmp_path / "missing") == []
    snapshot = fake_cached_repo(tmp_path, "Qwen/Qwen2-VL-2B-Instruct", {"config.json": b"{}", "w.bin": b"x" * 1000})
    fake_cached_repo(tmp_path, "someone/other-model", {"config.json": b"{}"})
    found = installed_models(tmp_path)
    assert [m.repo_id for m in found] == ["Qwen/Qwen2-VL-2B-Instruct", "someone/other-model"]
    assert found[0].path == snapshot and found[0].size_on_disk >= 1002 and found[0].revision == "a" * 40


def test_models_command_lists_catalog_and_installed(tmp_path):
    cache = tmp_path / "hub"
    fake_cached_repo(cache, "Qwen/Qwen2-VL-2B-Instruct", {"config.json": b"{}"})
    fake_cached_repo(cache, "someone/other-model", {"config.json": b"{}"})
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}
    rows = json.loads(subprocess.run([sys.executable, "-m", "optascan", "models", "--json"], capture_output=True,
                                     text=True, env=env, check=True).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["qwen2-vl-2b"]["installed"] and by_name["qwen2-vl-2b"]["path"].startswith(str(cache))
    assert not by_name["smolvlm-256m"]["installed"]
    assert by_name["someone/other-model"]["installed"]  # outside the catalog, still listed
    table = subprocess.run([sys.executable, "-m", "optascan", "models"], capture_output=True, text=True, env=env,
                           check=True).stdout
    assert "qwen2-vl-2b" in table and "(gated)" in table and str(cache) in table


def test_status_command_reports_devices_memory_and_modes():
    out = subprocess.run([sys.executable, "-m", "optascan", "status", "--json"], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    status = json.loads(out)
    cpu = status["devices"][0]
    assert cpu["device"] == "cpu" and cpu["cores"] >= 1 and cpu["free_bytes"] > 0
    assert set(status["modes"]) == {"saver", "balanced", "performance"}
    text = subprocess.run([sys.executable, "-m", "optascan", "status"], capture_output=True, text=True, check=True,
                          timeout=120).stdout
    assert "free" in text and "modes:" in text


def test_a_closed_pipe_ends_the_command_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "optascan", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` closing early
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err
