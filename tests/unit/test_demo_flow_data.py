"""The demo model's flow data (optascan.demo.flow): replies the grammar accepts and the flow parses as meant."""

from __future__ import annotations

import json
import random

import xgrammar
from xgrammar.testing import _is_grammar_accept_string as accepts

from optascan.demo.flow import PICK_GOALS, RANK_GOALS, analysis_reply, answer_reply, flow_turns
from optascan.demo.scenes import Item, Scene, sample
from optascan.flow.schema import ANALYSIS_SCHEMA, ANSWER_SCHEMA, analysis_from, answer_from

EXAMPLE = Scene(items=(Item("circle", "red", "left"), Item("circle", "red", "top"), Item("square", "blue", "right"),
                       Item("star", "yellow", "bottom"), Item("triangle", "green", "centre")),
                background=(150, 150, 160), size=(640, 480))


def test_every_reply_is_what_the_constrained_decoder_allows_and_parses():
    # the grammar is compiled as the HF backend compiles it: no free whitespace, schema property order
    analysis = xgrammar.Grammar.from_json_schema(json.dumps(ANALYSIS_SCHEMA), any_whitespace=False)
    answer = xgrammar.Grammar.from_json_schema(json.dumps(ANSWER_SCHEMA), any_whitespace=False)
    rng = random.Random(0)
    for seed in range(150):
        turns = flow_turns(sample(seed)[1], rng)
        assert accepts(analysis, turns.analysis) and accepts(answer, turns.answer), turns
        analysis_from(json.loads(turns.analysis), turns.analysis)
        answer_from(json.loads(turns.answer), turns.answer)


def test_pick_describes_region_by_region_asks_the_colour_and_ranks_the_choice_first():
    reply = json.loads(analysis_reply(EXAMPLE, PICK_GOALS[0]))
    assert reply["understanding"] == ("You want to pick one shape. Top: red circle. Left: red circle. "
                                      "Centre: green triangle. Right: blue square. Bottom: yellow star.")
    assert reply["questions"][0]["options"] == ["red", "green", "blue", "yellow"]  # reading order, once each
    text = answer_reply(EXAMPLE, PICK_GOALS[0], {"colour": "blue"})
    ranked = answer_from(json.loads(text), text)
    assert ranked.title == "Pick the blue square (right)"
    assert [(o.name, o.score) for o in ranked.options][:2] == [("blue square (right)", 9), ("red circle (top)", 4)]


def test_one_colour_asks_the_shape_and_one_kind_asks_nothing():
    shapes = Scene((Item("circle", "red", "left"), Item("star", "red", "top")), (150, 150, 150), (100, 100))
    assert json.loads(analysis_reply(shapes, PICK_GOALS[1]))["questions"][0]["id"] == "shape"
    single = Scene((Item("circle", "red", "left"),), (150, 150, 150), (100, 100))
    assert json.loads(analysis_reply(single, PICK_GOALS[0]))["questions"] == []
    skipped = json.loads(answer_reply(single, PICK_GOALS[0], {}))
    assert skipped["options"] == [{"name": "red circle (left)", "score": 5, "why": "no preference given"}]


def test_rank_asks_nothing_and_scores_colours_by_count():
    assert json.loads(analysis_reply(EXAMPLE, RANK_GOALS[0]))["questions"] == []
    text = answer_reply(EXAMPLE, RANK_GOALS[1], {})
    ranked = answer_from(json.loads(text), text)
    assert [(o.name, o.score, o.why) for o in ranked.options] == [
        ("red", 4, "2 shapes"), ("green", 2, "1 shape"), ("blue", 2, "1 shape"), ("yellow", 2, "1 shape")]
