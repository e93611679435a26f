"""Shared fixtures: an isolated home for every test, and tiny real checkpoints built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub; issue #5's tests point HF_ENDPOINT locally


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache and home directory points into a temp dir, so tests never touch the user's files."""
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_CONFIG_HOME", ".config"), ("HF_HOME", ".cache/huggingface")):
        monkeypatch.setenv(var, str(home / sub))
    return home


@pytest.fixture(autouse=True)
def no_temp_files_left(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own temp dir, and must leave none of optascan's temp files in it."""
    import tempfile

    from optascan.images.tempfiles import leftovers

    root = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield
    assert leftovers(str(root)) == [], "a test left optascan temp files behind"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """Build a tiny checkpoint of a family on first use; later uses get the same directory."""
    from optascan.testing.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_checkpoint(family, root / family, seed=0)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_engine(tiny_dir):
    """A loaded engine per family, shared by the tests of a session (each test sends its own requests)."""
    import optascan

    engines: dict[str, optascan.Engine] = {}

    def get(family: str) -> optascan.Engine:
        if family not in engines:
            engines[family] = optascan.load(tiny_dir(family), device="cpu")
        return engines[family]

    yield get
    for engine in engines.values():
        engine.close()
