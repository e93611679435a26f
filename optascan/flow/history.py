"""Scan history: a SQLite database (WAL) in the user's data directory.

Each completed scan is one row — goal, depth, model, questions, answers, result, timings and a small
metadata-free JPEG thumbnail — committed before ``record`` returns, so a crash later loses nothing that was
already completed. Full-text search (FTS5) over goals and answers. The schema carries a version and
migrations run forward on open.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InvalidRequest

SCHEMA_VERSION = 2
THUMBNAIL_SIDE = 256

_MIGRATIONS = {
    1: """
        CREATE TABLE scans (
            id TEXT PRIMARY KEY, created REAL NOT NULL, goal TEXT NOT NULL, depth TEXT NOT NULL,
            model TEXT NOT NULL, questions TEXT NOT NULL, answers TEXT NOT NULL, result TEXT NOT NULL,
            timings TEXT NOT NULL, thumbnail BLOB);
        CREATE INDEX scans_created ON scans(created);
    """,
    2: """
        CREATE VIRTUAL TABLE scans_fts USING fts5(id UNINDEXED, goal, answer);
        INSERT INTO scans_fts(id, goal, answer) SELECT id, goal, result FROM scans;
    """,
}


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "optascan" / "history.sqlite3"


@dataclass(frozen=True)
class Scan:
    id: str
    created: float
    goal: str
    depth: str
    model: str
    questions: list
    answers: dict
    result: dict
    timings: dict
    thumbnail: bytes | None

    def to_dict(self, *, with_thumbnail: bool = False) -> dict:
        data = {k: getattr(self, k) for k in ("id", "created", "goal", "depth", "model", "questions", "answers",
                                               "result", "timings")}
        if with_thumbnail and self.thumbnail is not None:
            data["thumbnail_jpeg_bytes"] = len(self.thumbnail)
        return data


class History:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each commit's checkpointed end
        self._migrate()

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one migrator at a time across processes
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InvalidRequest(f"{self.path} was written by a newer optascan (schema {version})",
                                     hint="upgrade optascan")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {step}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def record(self, *, goal: str, depth: str, model: str, questions: list, answers: dict, result: dict,
               timings: dict, image: Image.Image | None = None) -> str:
        """Store one completed scan; committed before it returns. Returns its id."""
        scan_id = uuid.uuid4().hex[:12]
        answer_text = " ".join(str(result.get(k, "")) for k in ("title", "summary", "markdown"))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO scans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (scan_id, time.time(), goal, depth, model, json.dumps(questions), json.dumps(answers),
                              json.dumps(result), json.dumps(timings), thumbnail(image) if image else None))
            self._db.execute("INSERT INTO scans_fts(id, goal, answer) VALUES (?, ?, ?)", (scan_id, goal, answer_text))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return scan_id

    def list(self, limit: int = 50) -> list[Scan]:
        rows = self._db.execute("SELECT * FROM scans ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_scan(row) for row in rows]

    def search(self, text: str, limit: int = 50) -> list[Scan]:
        words = [w for w in text.replace('"', " ").split() if w]
        if not words:
            return []
        query = " ".join(f'"{w}"' for w in words)  # each word literal: no FTS syntax from the user
        rows = self._db.execute(
            "SELECT scans.* FROM scans_fts JOIN scans ON scans.id = scans_fts.id WHERE scans_fts MATCH ? "
            "ORDER BY rank LIMIT ?", (query, limit)).fetchall()
        return [_scan(row) for row in rows]

    def show(self, scan_id: str) -> Scan | None:
        row = self._db.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        return _scan(row) if row else None

    def delete(self, scan_id: str) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        deleted = self._db.execute("DELETE FROM scans WHERE id = ?", (scan_id,)).rowcount
        self._db.execute("DELETE FROM scans_fts WHERE id = ?", (scan_id,))
        self._db.execute("COMMIT")
        return bool(deleted)

    def export(self) -> str:
        return json.dumps([scan.to_dict() for scan in self.list(limit=1_000_000)], indent=2, ensure_ascii=False)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()


def thumbnail(image: Image.Image) -> bytes:
    """A small JPEG re-encoded from pixels only: no EXIF, GPS or ICC data survives."""
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    clean = Image.new("RGB", small.size)
    clean.paste(small)
    buf = io.BytesIO()
    clean.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _scan(row: Any) -> Scan:
    sid, created, goal, depth, model, questions, answers, result, timings, thumb = row
    return Scan(sid, created, goal, depth, model, json.loads(questions), json.loads(answers), json.loads(result),
                json.loads(timings), thumb)
