"""The tolerant JSON parser over a corpus of messy model replies."""

import pytest

from optascan.errors import ParseError
from optascan.flow.parse import parse_json

EXPECTED = {"understanding": "A menu with 6 dishes", "questions": [{"type": "slider", "min": 0, "max": 15}]}

CORPUS = [
    # clean
    '{"understanding": "A menu with 6 dishes", "questions": [{"type": "slider", "min": 0, "max": 15}]}',
    # fenced, with prose around it
    'Sure! Here is the JSON:\n```json\n{"understanding": "A menu with 6 dishes", "questions": '
    '[{"type": "slider", "min": 0, "max": 15}]}\n```\nLet me know if you need more.',
    # fence without a language tag
    '```\n{"understanding": "A menu with 6 dishes", "questions": [{"type": "slider", "min": 0, "max": 15}]}\n```',
    # trailing prose, no fence
    '{"understanding": "A menu with 6 dishes", "questions": [{"type": "slider", "min": 0, "max": 15}]} I hope '
    'this helps {smile}',
    # single quotes and trailing commas
    "{'understanding': 'A menu with 6 dishes', 'questions': [{'type': 'slider', 'min': 0, 'max': 15,},],}",
    # a comment and Python literals that are not in the expected value's keys
    '{\n  // what I saw\n  "understanding": "A menu with 6 dishes",\n  "questions": [{"type": "slider", "min": 0,'
    ' "max": 15}]\n}',
    # leading prose with braces in it
    'I looked at the {photo}. {"understanding": "A menu with 6 dishes", "questions": [{"type": "slider", "min": 0,'
    ' "max": 15}]}',
]


@pytest.mark.parametrize("reply", CORPUS)
def test_messy_replies_give_the_object(reply):
    assert parse_json(reply) == EXPECTED


def test_apostrophes_inside_double_quoted_strings_survive_the_repair():
    assert parse_json("{'a': \"it's fine\", 'b': 'say \"hi\"',}") == {"a": "it's fine", "b": 'say "hi"'}


def test_python_literals_become_json():
    assert parse_json("{'ok': True, 'missing': None, 'no': False}") == {"ok": True, "missing": None, "no": False}


@pytest.mark.parametrize("reply, expected", [
    ('{"title": "Best value", "options": [{"name": "A", "score": 9}, {"name": "B", "sco',
     {"title": "Best value", "options": [{"name": "A", "score": 9}, {"name": "B"}]}),
    ('```json\n{"understanding": "a shelf", "questions": [', {"understanding": "a shelf", "questions": []}),
    ('{"summary": "cut off in the middle of a str', {"summary": "cut off in the middle of a str"}),
    ('{"a": 1, "b":', {"a": 1}),
])
def test_truncated_replies_are_closed_best_effort(reply, expected):
    assert parse_json(reply) == expected


@pytest.mark.parametrize("reply", ["", "I cannot help with that.", "[1, 2, 3]", "```\nnot json at all\n```",
                                   "{{{{", '"just a string"'])
def test_no_object_raises_parse_error_with_the_raw_text(reply):
    with pytest.raises(ParseError) as info:
        parse_json(reply)
    assert info.value.raw == reply and info.value.recoverable and isinstance(info.value, ValueError)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,\'`\n abcTrueNone0123.-/\\')), max_size=80))
def test_any_text_gives_a_dict_or_a_parse_error(text):
    try:
        assert isinstance(parse_json(text), dict)
    except ParseError as err:
        assert err.raw == text
