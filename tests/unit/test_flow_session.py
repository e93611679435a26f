"""The Opta session over the scripted engine: two turns, the image kept in the follow-up, typed errors."""

import json

import pytest
from PIL import Image

from optascan import Cancelled, CancelToken, Engine, InvalidRequest
from optascan.errors import ParseError
from optascan.flow.session import OptaSession
from optascan.testing.scripted import ScriptedBackend, byte_tokens

ANALYSIS = {"understanding": "A menu with six dishes.", "questions": [
    {"id": "budget", "kind": "slider", "prompt": "Max price?", "min": 5, "max": 30, "default": 15, "unit": "$"},
    {"id": "diet", "kind": "single_choice", "prompt": "Diet?", "options": ["any", "vegetarian"]}]}
ANSWER = {"title": "Most filling under $15", "summary": "The ramen wins.", "options": [
    {"name": "Salad", "score": 5, "why": "light"}, {"name": "Ramen", "score": 9, "why": "big bowl, $12"}],
    "highlights": ["Ramen $12"], "caveats": ["Prices may exclude tax"]}


def session_with(*replies, depth="balanced"):
    ids, decode = byte_tokens("")
    backend = ScriptedBackend(ids, decode)
    backend.replies = [byte_tokens(r)[0] for r in replies]
    engine = Engine(backend, name="scripted")
    menu = Image.new("RGB", (400, 300), (250, 240, 220))
    return OptaSession(engine, "most filling under $15", images=[menu], depth_name=depth), backend, engine


def test_analyze_then_answer_keeps_the_image_and_the_first_reply_in_the_follow_up():
    session, backend, engine = session_with("Here you go:\n```json\n" + json.dumps(ANALYSIS) + "\n```",
                                            json.dumps(ANSWER))
    with engine:
        analysis = session.analyze()
        assert [q.id for q in analysis.questions] == ["budget", "diet"]
        answer = session.answer({"budget": 15, "diet": "any"})
    assert [o.name for o in answer.options] == ["Ramen", "Salad"]
    assert "| 1 | Ramen | 9/10 | big bowl, $12 |" in answer.markdown and "**Caveats**" in answer.markdown
    follow_up = backend.prepared[1]
    assert follow_up.images and len(follow_up.images) == 1  # the photo itself, not a text summary
    roles = [m["role"] for m in follow_up.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert "A menu with six dishes." in follow_up.messages[2]["content"][0]["text"]
    assert '"budget": 15' in follow_up.messages[3]["content"][0]["text"]
    assert len(session.generations) == 2


def test_quick_depth_asks_at_most_one_question():
    session, _, engine = session_with(json.dumps(ANALYSIS), depth="quick")
    with engine:
        assert len(session.analyze().questions) == 1


def test_typed_errors_for_order_unknown_answers_garbage_and_cancel():
    session, _, engine = session_with(json.dumps(ANALYSIS), "not json, sorry", json.dumps(ANALYSIS))
    with engine:
        with pytest.raises(InvalidRequest, match="analyze"):
            session.answer({})
        session.analyze()
        with pytest.raises(InvalidRequest, match="not asked"):
            session.answer({"colour": "red"})
        with pytest.raises(ParseError) as info:
            session.answer({"budget": 10})
        assert info.value.raw == "not json, sorry"
        token = CancelToken()
        token.cancel()
        with pytest.raises(Cancelled):
            OptaSession(engine, "x", images=[]).analyze(cancel=token)
    with pytest.raises(InvalidRequest, match="depth"):
        OptaSession(engine, "x", depth_name="deep")
    with pytest.raises(InvalidRequest, match="goal"):
        OptaSession(engine, "  ")


def test_a_completed_session_is_recorded_and_the_history_command_shows_it(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from optascan.flow.history import History

    session, _, engine = session_with(json.dumps(ANALYSIS), json.dumps(ANSWER))
    history = History(tmp_path / "h.sqlite3")
    with engine:
        with pytest.raises(InvalidRequest):
            session.record(history)
        session.analyze()
        session.answer({"budget": 12})
        scan_id = session.record(history)
    scan = history.show(scan_id)
    assert scan.answers == {"budget": 12} and scan.result["options"][0]["name"] == "Ramen"
    assert scan.thumbnail and len(scan.timings["turns"]) == 2
    history.close()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    (tmp_path / "data" / "optascan").mkdir(parents=True)
    for suffix in ("", "-wal", "-shm"):
        if (tmp_path / f"h.sqlite3{suffix}").exists():
            (tmp_path / f"h.sqlite3{suffix}").rename(tmp_path / "data" / "optascan" / f"history.sqlite3{suffix}")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "optascan", "history", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    assert scan_id in cli().stdout and scan_id in cli("search", "filling").stdout
    assert json.loads(cli("show", scan_id).stdout)["goal"] == "most filling under $15"
    assert json.loads(cli("export").stdout)[0]["id"] == scan_id
    assert cli("rm", scan_id).returncode == 0 and cli("rm", scan_id).returncode == 1
    assert cli("show").returncode == 1 and "needs" in cli("show").stderr
