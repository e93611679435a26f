"""The Opta session on a real (random-weight) checkpoint: the real chat template takes the two-turn conversation
with the image, and a reply that is not JSON becomes a typed ParseError rather than a crash."""

import pytest
from PIL import Image

from optascan.errors import ParseError
from optascan.flow.session import OptaSession


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_random_weights_give_a_parse_error_holding_the_raw_reply(tiny_engine, family):
    session = OptaSession(tiny_engine(family), "cheapest item", images=[Image.new("RGB", (320, 240))],
                          depth_name="quick", seed=0, constrained=False)
    with pytest.raises(ParseError) as info:
        session.analyze()
    assert info.value.raw == session.generations[0].text
    assert session.generations[0].usage.image_tokens > 0


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_constrained_decoding_gives_schema_valid_json_even_from_random_weights(tiny_engine, family):
    import json

    import jsonschema

    from optascan.flow.prompts import DEPTHS, analyze_messages
    from optascan.flow.schema import ANALYSIS_SCHEMA, ANSWER_SCHEMA

    engine = tiny_engine(family)
    messages = analyze_messages("cheapest item", [Image.new("RGB", (320, 240))], DEPTHS["quick"])
    for schema in (ANALYSIS_SCHEMA, ANSWER_SCHEMA):
        for seed in range(6):
            result = engine.generate(messages=messages, json_schema=schema, max_tokens=4000, temperature=1.0,
                                     seed=seed)
            assert result.finish_reason.value == "stop", (seed, result.text[-80:])  # the grammar ended it
            jsonschema.validate(json.loads(result.text, strict=False), _without_lengths(schema))


def _without_lengths(schema):
    """The structure without maxLength: random weights emit byte tokens that are not valid UTF-8 inside strings,
    which the grammar (working on bytes) lets through and decoding turns into U+FFFD, so character counts
    differ from byte counts. Lengths are only there to keep output finite; the structure is what is checked."""
    if isinstance(schema, dict):
        return {k: _without_lengths(v) for k, v in schema.items() if k != "maxLength"}
    if isinstance(schema, list):
        return [_without_lengths(v) for v in schema]
    return schema


def test_a_session_on_a_random_model_is_constrained_automatically(tiny_engine):
    session = OptaSession(tiny_engine("qwen2_vl"), "cheapest item", images=[Image.new("RGB", (320, 240))],
                          depth_name="quick", seed=3)
    assert session.constrained
    try:
        analysis = session.analyze()
    except ParseError as err:  # cut off at the depth's token budget, or a check the schema cannot express
        assert err.raw == session.generations[0].text
    else:
        assert analysis.understanding and len(analysis.questions) <= 1
    assert session.generations[0].text.startswith('{"understanding": "')  # the grammar shaped the reply
