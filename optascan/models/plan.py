"""Pure parts of a pull: name and file-name safety, the disk check, and monotonic progress events.

No network and no hub client here; ``pull.py`` (next) feeds these from the hub's metadata.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InsufficientDiskSpace, InvalidRequest, UnsafeFileName

DISK_MARGIN = 0.20  # the original app's buffer: free space must cover the download plus 20 %
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$")


def validate_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise InvalidRequest(f"{repo_id!r} is not a hub repo id like 'org/name'", field="model")
    return repo_id


def validate_revision(revision: str) -> str:
    if not _REVISION.match(revision) or ".." in revision or "//" in revision:
        raise InvalidRequest(f"{revision!r} is not a branch, tag or commit", field="revision")
    return revision


def validate_filename(name: str) -> str:
    """Refuse anything that could leave the snapshot directory (Ollama CVE-2024-37032 was a digest path)."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeFileName(f"refused the file name {name!r} listed by the hub")
    return name


def check_disk(needed_bytes: int, free_bytes: int, where: str) -> None:
    required = int(needed_bytes * (1 + DISK_MARGIN))
    if free_bytes < required:
        raise InsufficientDiskSpace(
            f"the pull needs {_gb(needed_bytes)} (+20 % = {_gb(required)}) but {where} has {_gb(free_bytes)} free",
            needed_bytes=required, free_bytes=free_bytes)


def _gb(n: int) -> str:
    return f"{n / 1000**3:.2f} GB" if n >= 10**8 else f"{n / 1000**2:.1f} MB"


class Phase(str, enum.Enum):
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    DONE = "done"


@dataclass(frozen=True)
class PullEvent:
    phase: Phase
    file: str | None
    file_bytes: int
    file_total: int
    bytes: int  # overall, never decreases
    total: int
    bytes_per_s: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return 1.0 if self.phase is Phase.DONE else (self.bytes / self.total if self.total else 0.0)


class Progress:
    """Turns per-file byte counts (which may be re-reported, or reset by a retry) into monotonic events."""

    def __init__(self, files: dict[str, int], emit: Callable[[PullEvent], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sizes, self.emit, self.clock = dict(files), emit, clock
        self.done: dict[str, int] = dict.fromkeys(files, 0)
        self.total = sum(files.values())
        self.started = clock()
        self.start_bytes: int | None = None

    @property
    def bytes(self) -> int:
        return sum(self.done.values())

    def phase(self, phase: Phase, file: str | None = None) -> None:
        self._emit(phase, file)

    def update(self, file: str, file_bytes: int) -> None:
        """Bytes of ``file`` on disk now; smaller numbers than already reported are ignored (monotonic)."""
        if self.start_bytes is None:
            self.start_bytes = self.bytes  # bytes already there (a resume) do not count towards speed
        capped = min(file_bytes, self.sizes[file])
        if capped > self.done[file]:
            self.done[file] = capped
            self._emit(Phase.DOWNLOADING, file)

    def _emit(self, phase: Phase, file: str | None) -> None:
        elapsed = self.clock() - self.started
        fresh = self.bytes - (self.start_bytes or 0)
        speed = fresh / elapsed if elapsed > 0 and fresh > 0 else None
        eta = (self.total - self.bytes) / speed if speed else None
        self.emit(PullEvent(phase, file, self.done.get(file, 0) if file else 0, self.sizes.get(file, 0) if file else 0,
                            self.bytes, self.total, speed, eta))
