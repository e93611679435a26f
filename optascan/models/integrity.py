"""Integrity of blobs in the HF cache, checked offline: every blob is named by its own hash.

LFS files are stored as ``blobs/<sha256>``; small files as ``blobs/<git blob sha1>``. So ``verify`` needs
no network: it re-hashes each blob and compares with its name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

_READ = 8 * 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1_of(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    files: int
    bad: tuple[str, ...]  # snapshot file names whose blob does not match its hash, or is missing

    @property
    def ok(self) -> bool:
        return not self.bad


def verify_snapshot(snapshot: Path) -> VerifyReport:
    bad, files = [], 0
    for link in sorted(p for p in snapshot.rglob("*") if p.is_symlink() or p.is_file()):
        files += 1
        blob = link.resolve()
        name = blob.name
        if not blob.is_file():
            bad.append(str(link.relative_to(snapshot)))
        elif len(name) == 64 and sha256_of(blob) != name:
            bad.append(str(link.relative_to(snapshot)))
        elif len(name) == 40 and git_blob_sha1_of(blob) != name:
            bad.append(str(link.relative_to(snapshot)))
    return VerifyReport(snapshot, files, tuple(bad))
