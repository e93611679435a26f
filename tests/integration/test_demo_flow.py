"""The Opta flow end to end on the shipped demo model: real questions and real rankings about shapes.

The demo model is trained on the flow's own prompts (optascan.demo.flow); here it runs through the public
session API and the CLI, under JSON-schema constrained decoding, on held-out scenes, and must say what the
scene calls for: the right description, the right question, the ranking that follows from the user's answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optascan
from optascan.demo.eval import run_flow_eval, session_flow
from optascan.flow.history import History

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    with optascan.load("demo", device="cpu") as engine:
        yield engine


def test_held_out_flows_describe_ask_and_rank_right(demo):
    report = run_flow_eval(session_flow(demo), scenes=24)
    accuracy = report["accuracy"]
    assert set(accuracy) == {"pick:analysis", "pick:answer", "rank:analysis", "rank:answer"}
    assert min(accuracy.values()) >= 0.8, (accuracy, report["misses"])


def test_optimize_on_the_example_photo_ranks_the_chosen_colour_first_and_saves_it(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("OPTASCAN_MODEL", None)
    done = subprocess.run([sys.executable, "-m", "optascan", "optimize", "examples/shapes.jpg",
                           "Which shape should I pick?", "--answer", "colour=blue", "--json"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["title"] == "Pick the blue square"
    assert [o["name"] for o in result["options"]][:1] == ["blue square"]
    assert {o["name"] for o in result["options"]} == {"red circle", "green triangle", "blue square", "yellow star"}
    with History(tmp_path / "data" / "optascan" / "history.sqlite3") as history:
        scans = history.list()
    assert len(scans) == 1 and scans[0].goal == "Which shape should I pick?"
    assert scans[0].result["title"] == "Pick the blue square" and scans[0].answers == {"colour": "blue"}


def test_the_rank_goal_asks_nothing_and_counts(demo):
    session = optascan.OptaSession(demo, "Rank the colours by how many shapes they have.",
                                   images=[ROOT / "examples" / "shapes.jpg"])
    assert session.analyze().questions == ()
    answer = session.answer({})
    assert [(o.name, o.score) for o in answer.options][0] == ("red", 4)
    assert "| 1 | red | 4/10 | 2 shapes |" in answer.markdown
