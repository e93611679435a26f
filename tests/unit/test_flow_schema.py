"""Questions and answers of the Opta flow: validated from parsed replies, typed errors naming the problem."""

import pytest

from optascan.errors import ParseError
from optascan.flow.parse import parse_json
from optascan.flow.schema import ANALYSIS_SCHEMA, ANSWER_SCHEMA, analysis_from, answer_from, schema_text

RAW = "(raw reply)"


def test_analysis_with_every_question_kind():
    reply = """```json
    {"understanding": "A lunch menu with 8 dishes and prices.",
     "questions": [
       {"id": "budget", "kind": "slider", "prompt": "Max price?", "min": 5, "max": 30, "default": 50, "unit": "$"},
       {"id": "diet", "kind": "multi_choice", "prompt": "Diet?", "options": ["vegetarian", "vegan", "none"]},
       {"id": "mood", "kind": "single_choice", "prompt": "Hungry?", "options": ["very", "a bit"]},
       {"id": "extra", "kind": "text", "prompt": "Anything else?", "placeholder": "allergies..."}
     ]}
    ```"""
    analysis = analysis_from(parse_json(reply), reply)
    assert analysis.understanding.startswith("A lunch menu")
    assert [q.kind for q in analysis.questions] == ["slider", "multi_choice", "single_choice"]  # at most three
    slider = analysis.questions[0]
    assert (slider.min, slider.max, slider.default, slider.unit) == (5, 30, 30, "$")  # default clamped


@pytest.mark.parametrize("obj, words", [
    ({"questions": []}, "understanding"),
    ({"understanding": "x", "questions": "none"}, "list"),
    ({"understanding": "x", "questions": [{"kind": "essay", "prompt": "?"}]}, "kind"),
    ({"understanding": "x", "questions": [{"kind": "single_choice", "prompt": "?", "options": ["only"]}]},
     "two options"),
    ({"understanding": "x", "questions": [{"kind": "slider", "prompt": "?", "min": 5, "max": 5}]}, "min < max"),
    ({"understanding": "x", "questions": [{"kind": "text"}]}, "prompt"),
])
def test_invalid_analyses_raise_parse_error_naming_the_problem(obj, words):
    with pytest.raises(ParseError, match=words) as info:
        analysis_from(obj, RAW)
    assert info.value.raw == RAW


def test_no_questions_is_a_valid_analysis():
    assert analysis_from({"understanding": "Clear enough.", "questions": []}, RAW).questions == ()


def test_answer_options_are_ranked_best_first_and_scores_clamped():
    answer = answer_from({"title": "Best lunch under $15", "summary": "Go for the ramen.", "options": [
        {"name": "Salad", "score": 6.5, "why": "light"}, {"name": "Ramen", "score": 12, "why": "filling"},
        {"name": "Soup", "score": -1, "why": "small"}], "highlights": ["ramen $12"], "caveats": "not a list"}, RAW)
    assert [o.name for o in answer.options] == ["Ramen", "Salad", "Soup"]
    assert [o.score for o in answer.options] == [10.0, 6.5, 0.0]
    assert answer.highlights == ("ramen $12",) and answer.caveats == ()
    with pytest.raises(ParseError, match="score"):
        answer_from({"title": "t", "summary": "s", "options": [{"name": "A", "score": "high", "why": ""}]}, RAW)


def test_schemas_are_compact_json_for_prompts():
    import json

    assert json.loads(schema_text(ANALYSIS_SCHEMA))["properties"]["questions"]["maxItems"] == 3
    assert set(json.loads(schema_text(ANSWER_SCHEMA))["required"]) == {"title", "summary", "options"}
