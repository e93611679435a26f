"""What is installed: the standard Hugging Face cache (shared with every other HF tool), read without network."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InstalledModel:
    repo_id: str
    size_on_disk: int
    path: Path  # the newest snapshot
    revision: str  # its commit

    @property
    def repo_dir(self) -> Path:
        """The repo's folder in the cache (models--org--name), holding blobs, snapshots and refs."""
        return self.path.parent.parent


def find_installed(name: str) -> InstalledModel:
    """The installed model for a catalog name or repo id; ModelNotFound naming the pull command if absent."""
    from ..errors import ModelNotFound
    from .pull import repo_for

    repo_id = repo_for(name)
    found = next((m for m in installed_models() if m.repo_id == repo_id), None)
    if found is None:
        raise ModelNotFound(f"{name!r} is not downloaded", hint=f"optascan pull {name}")
    return found


def installed_models(cache_dir: str | Path | None = None) -> list[InstalledModel]:
    """Models in the HF cache (``HF_HUB_CACHE`` / ``HF_HOME`` decide where), newest snapshot each."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:  # the cache folder read now: scan_cache_dir's own default is the one seen when it was imported
        info = scan_cache_dir(cache_dir or constants.HF_HUB_CACHE)
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        models.append(InstalledModel(repo.repo_id, repo.size_on_disk, Path(newest.snapshot_path), newest.commit_hash))
    return sorted(models, key=lambda m: m.repo_id.lower())


def delete_installed(model: InstalledModel) -> None:
    """Delete a cached model: its repo folder and huggingface_hub's lock files beside it (in .locks/)."""
    shutil.rmtree(model.repo_dir)
    shutil.rmtree(model.repo_dir.parent / ".locks" / model.repo_dir.name, ignore_errors=True)
