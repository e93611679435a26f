"""Model name → local directory. No network: pulling is a separate, explicit step (issue #5).

A name is, in order: an existing local directory; "demo" (the model shipped inside the package); a
catalog name; a hub repo id ("org/name") found in the local Hugging Face cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotFound

# Catalog names → hub repo ids. The full catalog (sizes, revisions, licences) arrives with issue #5.
CATALOG: dict[str, str] = {
    "smolvlm-256m": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "smolvlm-500m": "HuggingFaceTB/SmolVLM-500M-Instruct",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
}


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
    repo_id = CATALOG.get(text.lower(), text)
    if repo_id.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
            pass
    known = ", ".join(sorted(CATALOG))
    raise ModelNotFound(f"model {text!r} is not a local directory and is not in the local cache",
                        hint=f"pass a model directory, or download one of: {known}")
