"""Model name → local directory. No network: pulling is a separate, explicit step (issue #5).

A name is, in order: an existing local directory; "demo" (the model shipped inside the package); a
catalog name; a hub repo id ("org/name") found in the local Hugging Face cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotFound
from .catalog import CATALOG, lookup

DEMO_DIR = Path(__file__).parent / "demo"


def resolve_model(name: str | os.PathLike) -> Path:
    text = os.fspath(name)
    if text == "demo" and (DEMO_DIR / "model.safetensors").is_file():
        return DEMO_DIR
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{text!r} is a directory but holds no config.json",
                                hint="point at the folder that holds config.json and the weights")
        return path.resolve()
    entry = lookup(text)
    repo_id = entry.repo_id if entry and entry.repo_id else text
    if repo_id.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
            pass
    if entry is not None or repo_id.count("/") == 1:
        hint = f"download it first: optascan pull {text}"
    else:
        hint = "pass a model directory, or pull one of: " + ", ".join(e.name for e in CATALOG if e.repo_id)
    raise ModelNotFound(f"model {text!r} is not a local directory and is not in the local cache", hint=hint)
