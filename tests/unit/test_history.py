"""Scan history in SQLite: records, search, thumbnails without metadata, migrations, concurrency, kill -9."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from PIL import Image

from optascan.errors import InvalidRequest
from optascan.flow.history import SCHEMA_VERSION, History, default_path

SCAN = dict(depth="balanced", model="demo", questions=[{"id": "budget", "kind": "slider"}], answers={"budget": 15},
            result={"title": "Ramen wins", "summary": "The ramen is the most filling.", "markdown": "## Ramen"},
            timings={"total_s": 1.2})


def test_record_list_show_search_delete_export(tmp_path):
    history = History(tmp_path / "h.sqlite3")
    first = history.record(goal="most filling lunch under $15", **SCAN)
    time.sleep(0.01)
    second = history.record(goal="cheapest coffee", **{**SCAN, "result": {"title": "Espresso", "summary": "$2"}})
    assert [s.id for s in history.list()] == [second, first]  # newest first
    assert history.show(first).answers == {"budget": 15}
    assert [s.id for s in history.search("ramen")] == [first]  # answers are searched
    assert [s.id for s in history.search("coffee")] == [second]  # goals too
    assert history.search('" OR 1=1 --') == [] and history.search("   ") == []  # user text is never FTS syntax
    assert history.delete(first) and not history.delete(first)
    assert history.search("ramen") == [] and history.show(first) is None
    assert '"cheapest coffee"' in history.export()
    history.close()


def test_default_path_is_in_the_users_data_dir(isolated_home):
    assert str(default_path()).startswith(str(isolated_home)) and default_path().name == "history.sqlite3"


def test_thumbnail_is_small_and_has_no_metadata(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # GPS
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 10)).save(buf, format="JPEG", exif=exif.tobytes())
    history = History(tmp_path / "h.sqlite3")
    scan_id = history.record(goal="g", image=Image.open(buf), **SCAN)
    thumb = Image.open(io.BytesIO(history.show(scan_id).thumbnail))
    assert max(thumb.size) <= 256 and not thumb.getexif() and "icc_profile" not in thumb.info
    history.close()


def test_an_older_schema_is_migrated_and_a_newer_one_refused(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE scans (id TEXT PRIMARY KEY, created REAL NOT NULL, goal TEXT NOT NULL, depth TEXT NOT NULL,
            model TEXT NOT NULL, questions TEXT NOT NULL, answers TEXT NOT NULL, result TEXT NOT NULL,
            timings TEXT NOT NULL, thumbnail BLOB);
        INSERT INTO scans VALUES ('old1', 1.0, 'best shampoo', 'quick', 'demo', '[]', '{}', '{"title": "X"}',
            '{}', NULL);
        PRAGMA user_version = 1;""")
    db.close()
    history = History(path)
    assert [s.id for s in history.search("shampoo")] == ["old1"]  # the v2 full-text index covers old rows
    history.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(InvalidRequest, match="newer"):
        History(path)


WRITER = """
import sys, time
from optascan.flow.history import History
h = History(sys.argv[1])
for i in range(int(sys.argv[2])):
    h.record(goal=f"goal {sys.argv[3]} {i}", depth="quick", model="m", questions=[], answers={},
             result={"title": "t"}, timings={})
if len(sys.argv) > 4:
    print("recorded", flush=True)
    time.sleep(60)  # a generation in progress when the process is killed
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    History(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, "40", name]) for name in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    assert len(History(path).list(limit=1000)) == 80


def test_kill_9_during_a_generation_keeps_what_was_completed(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, "3", "k", "then-hang"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "recorded"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    history = History(path)
    assert sorted(s.goal for s in history.list()) == ["goal k 0", "goal k 1", "goal k 2"]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
