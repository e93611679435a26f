"""Pull a model into the standard Hugging Face cache: checked, resumable, verified, cancellable.

    checking     model info with file metadata (sizes, LFS sha256), names validated, disk checked (+20 %)
    downloading  each missing blob streamed to ``blobs/<etag>.incomplete`` (resumed with Range), hashed on
                 the way, under a per-blob file lock (two processes pulling at once get one copy)
    verifying    sha256 (LFS files) or size (the rest) must match before the blob is renamed into place and
                 linked from ``snapshots/<commit>/``; a mismatch deletes the file and names it
    done         ``refs/<revision>`` points at the commit

The layout is huggingface_hub's, so every other HF tool sees the same files. Killing the process leaves
``*.incomplete`` behind, and the next pull continues from its size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..engine.cancel import CancelToken
from ..errors import IntegrityError, ModelAccessDenied, ModelNotFound, OptascanError, PullFailed
from .catalog import lookup
from .integrity import sha256_of
from .plan import Phase, Progress, PullEvent, check_disk, validate_filename, validate_repo_id, validate_revision

CHUNK = 64 * 1024  # written as it arrives: a drop or a kill loses at most this much


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    etag: str  # sha256 for LFS files, git blob sha1 for the rest: the blob's name in the cache
    sha256: str | None


@dataclass(frozen=True)
class PullResult:
    repo_id: str
    commit: str
    path: Path
    downloaded_bytes: int
    cancelled: bool


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("OPTASCAN_OFFLINE", "HF_HUB_OFFLINE"))


def repo_for(name: str) -> str:
    entry = lookup(name)
    if entry is not None:
        if entry.repo_id is None:
            raise ModelNotFound(f"{name!r} ships inside the package; there is nothing to pull")
        return entry.repo_id
    return validate_repo_id(name)


def pull(name: str, *, revision: str | None = None, cancel: CancelToken | None = None,
         on_event: Callable[[PullEvent], None] | None = None, cache_dir: str | Path | None = None) -> PullResult:
    """Pull ``name`` (catalog name or hub repo id); events go to ``on_event``. Typed errors throughout."""
    from huggingface_hub import constants

    if offline():
        raise PullFailed(f"offline mode is on (OPTASCAN_OFFLINE / HF_HUB_OFFLINE): cannot pull {name!r}",
                         hint="unset OPTASCAN_OFFLINE and HF_HUB_OFFLINE to download", recoverable=False)
    repo_id = repo_for(name)
    entry = lookup(name)
    revision = validate_revision(revision or (entry.revision if entry else None) or "main")  # catalog pins win
    cancel = cancel or CancelToken()
    emit = on_event or (lambda event: None)
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    commit, files = _remote_files(repo_id, revision)
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    progress = Progress({f.name: f.size for f in files}, emit)
    for f in files:  # what is already complete, or partly there, counts from the start
        done = blobs / f.etag
        partial = blobs / f"{f.etag}.incomplete"
        progress.done[f.name] = f.size if done.is_file() else (partial.stat().st_size if partial.is_file() else 0)
    progress.phase(Phase.CHECKING)
    blobs.mkdir(parents=True, exist_ok=True)
    check_disk(progress.total - progress.bytes, shutil.disk_usage(blobs).free, str(cache))
    downloaded = 0
    for f in files:
        if cancel.cancelled:
            return PullResult(repo_id, commit, snapshot, downloaded, True)
        downloaded += _fetch_blob(repo_id, commit, f, blobs, progress, cancel)
        if cancel.cancelled:
            return PullResult(repo_id, commit, snapshot, downloaded, True)
        _link(snapshot, f, blobs)
    ref = repo_dir / "refs" / revision  # a revision like refs/pr/1 nests folders
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    progress.phase(Phase.DONE)
    return PullResult(repo_id, commit, snapshot, downloaded, False)


def pull_events(name: str, **kwargs) -> Iterator[PullEvent]:
    """The same pull as an iterator of events (runs in a thread; closing the iterator cancels it)."""
    import queue
    import threading

    events: queue.SimpleQueue = queue.SimpleQueue()
    cancel = kwargs.pop("cancel", None) or CancelToken()
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(pull(name, cancel=cancel, on_event=events.put, **kwargs))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            outcome.append(err)
        events.put(None)

    threading.Thread(target=work, name="optascan-pull", daemon=True).start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        cancel.cancel("the pull iterator was closed")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def _remote_files(repo_id: str, revision: str) -> tuple[str, list[RemoteFile]]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except GatedRepoError as err:
        raise ModelAccessDenied(f"{repo_id} is gated: your token has no access") from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ModelNotFound(f"{repo_id}@{revision} was not found on the hub", hint="check the name and revision"
                            ) from err
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelAccessDenied(f"the hub refused access to {repo_id} (HTTP {status})") from err
        raise PullFailed(f"the hub answered an error for {repo_id}: HTTP {status}") from err
    except OSError as err:
        raise PullFailed(f"cannot reach the hub for {repo_id}: {err}") from err
    files = []
    for sibling in info.siblings or []:
        validate_filename(sibling.rfilename)
        lfs = sibling.lfs
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        etag = sha256 or sibling.blob_id
        if not etag or sibling.size is None:
            raise PullFailed(f"the hub gave no size or hash for {sibling.rfilename}")
        files.append(RemoteFile(sibling.rfilename, int(sibling.size), etag, sha256))
    return info.sha, files


def _fetch_blob(repo_id: str, commit: str, f: RemoteFile, blobs: Path, progress: Progress,
                cancel: CancelToken) -> int:
    """Download one blob (resuming), verify it, move it into place. Returns the bytes fetched now."""
    from filelock import FileLock

    target = blobs / f.etag
    locks = blobs.parent.parent / ".locks" / blobs.parent.name  # where huggingface_hub keeps its own locks
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{f.etag}.lock")):
        if target.is_file():  # already there (perhaps another process just finished it)
            progress.update(f.name, f.size)
            return 0
        partial = blobs / f"{f.etag}.incomplete"
        fetched, digest = _stream(repo_id, commit, f, partial, progress, cancel)
        if cancel.cancelled:
            return fetched  # the partial file stays: the next pull resumes from it
        progress.phase(Phase.VERIFYING, f.name)
        size_ok = partial.stat().st_size == f.size
        if not size_ok or (f.sha256 is not None and (digest or sha256_of(partial)) != f.sha256):
            partial.unlink(missing_ok=True)
            raise IntegrityError(f"{f.name} does not match the hub's {'sha256' if f.sha256 else 'size'}; "
                                 "the bad file was deleted")
        os.replace(partial, target)
        return fetched


def _stream(repo_id: str, commit: str, f: RemoteFile, partial: Path, progress: Progress,
            cancel: CancelToken) -> tuple[int, str | None]:
    """Append the missing bytes to ``partial``; returns (bytes fetched, sha256 of the whole file if hashed).

    The sha256 is computed as the bytes arrive (after hashing any resumed prefix), so verification needs no
    second pass over a multi-GB file.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session

    session = get_session()  # the hub client's own HTTP client (httpx or its fork, by version)
    http_error = sys.modules[type(session).__module__.split(".")[0]].HTTPError

    start = partial.stat().st_size if partial.is_file() else 0
    if start > f.size:
        partial.unlink()
        start = 0
    if start == f.size:  # complete already (cancelled or killed between the last byte and the rename)
        progress.update(f.name, start)
        return 0, None
    headers = build_hf_headers()
    if start:
        headers["Range"] = f"bytes={start}-"
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/{commit}/{quote(f.name)}"
    fetched = 0
    try:
        with session.stream("GET", url, headers=headers, follow_redirects=True, timeout=30.0) as response:
            if response.status_code in (401, 403):
                raise ModelAccessDenied(f"the hub refused {f.name} (HTTP {response.status_code})")
            if response.status_code not in (200, 206):
                raise PullFailed(f"downloading {f.name} answered HTTP {response.status_code}")
            mode = "ab" if response.status_code == 206 and start else "wb"  # a server may ignore Range
            written = start if mode == "ab" else 0
            hasher = _prefix_hash(partial, written) if f.sha256 else None
            with open(partial, mode) as out:
                for chunk in response.iter_bytes(CHUNK):
                    if cancel.cancelled:
                        break
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    fetched += len(chunk)
                    written += len(chunk)
                    progress.update(f.name, written)
    except OptascanError:
        raise
    except (http_error, OSError) as err:
        raise PullFailed(f"the download of {f.name} broke off after {fetched:,} bytes: {err}") from err
    return fetched, hasher.hexdigest() if hasher is not None else None


def _prefix_hash(partial: Path, length: int):
    hasher = hashlib.sha256()
    if length:
        with open(partial, "rb") as f:
            while length and (chunk := f.read(min(length, 8 * 1024 * 1024))):
                hasher.update(chunk)
                length -= len(chunk)
    return hasher


def _link(snapshot: Path, f: RemoteFile, blobs: Path) -> None:
    link = snapshot / f.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blobs / f.etag, link.parent))
