"""The model's context length: a prompt that overruns it is refused, a reply that would is capped and reported."""

import pytest
from PIL import Image

from optascan import Engine, FinishReason, InvalidRequest
from optascan.testing.scripted import ScriptedBackend, byte_tokens


def engine_with_context(limit, reply="abcdefghijklmnopqrstuvwxyz"):
    backend = ScriptedBackend(*byte_tokens(reply))
    backend.context_length = limit
    return Engine(backend, name="scripted")


def test_a_reply_that_would_overrun_the_context_is_capped_and_says_so():
    with engine_with_context(13) as engine:  # the scripted prompt is 3 tokens: room for 10
        result = engine.generate(prompt="hi", max_tokens=20)
    assert result.usage.completion_tokens == 10 and result.finish_reason is FinishReason.LENGTH
    assert result.metadata["max_tokens_capped"] == {"requested": 20, "to": 10, "context_length": 13}


def test_within_the_context_nothing_changes():
    with engine_with_context(100) as engine:
        result = engine.generate(prompt="hi", max_tokens=5)
    assert result.usage.completion_tokens == 5 and "max_tokens_capped" not in result.metadata


def test_a_prompt_longer_than_the_context_is_a_clear_error_and_the_engine_keeps_serving():
    with engine_with_context(40) as engine:
        with pytest.raises(InvalidRequest) as info:
            engine.generate(prompt="what is this?", images=[Image.new("RGB", (640, 480))], max_tokens=5)
        assert info.value.field == "messages" and "context holds 40" in str(info.value)
        assert "image" in info.value.hint
        assert engine.generate(prompt="hi", max_tokens=3).usage.completion_tokens == 3
