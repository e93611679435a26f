import pytest

from optascan import InvalidRequest, Request
from optascan.engine.conversation import to_conversation
from optascan.errors import OptascanError
from optascan.types import Event, State


@pytest.mark.parametrize("fields, field", [
    ({}, "messages"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"prompt": "  "}, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi", "temperature": float("nan")}, "temperature"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "top_k": -1}, "top_k"),
    ({"prompt": "hi", "seed": -5}, "seed"),
    ({"prompt": "hi", "stop": [""]}, "stop"),
    ({"prompt": "hi", "repetition_penalty": 0}, "repetition_penalty"),
    ({"messages": []}, "messages"),
])
def test_invalid_requests_raise_a_typed_error_naming_the_field(fields, field):
    with pytest.raises(InvalidRequest) as info:
        Request(**fields)
    assert info.value.field == field
    assert isinstance(info.value, ValueError) and isinstance(info.value, OptascanError)
    assert info.value.recoverable


def test_a_single_stop_string_becomes_a_tuple():
    assert Request(prompt="hi", stop="END").stop == ("END",)


def test_prompt_and_images_become_one_user_message_images_first():
    conv = to_conversation(Request(prompt="What?", images=["a.jpg", b"xx"]))
    assert conv.images == ("a.jpg", b"xx")
    assert conv.messages == ({"role": "user", "content": [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": "What?"}]},)


def test_openai_messages_keep_image_order_and_text():
    conv = to_conversation(Request(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": "data:image/png;base64,BBBB"},
        ]},
    ]))
    assert conv.images == ("data:image/png;base64,AAAA", "data:image/png;base64,BBBB")
    assert conv.messages[1]["content"][1:] == [{"type": "image"}, {"type": "image"}]
    assert conv.as_text_messages()[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("messages", [
    [{"role": "robot", "content": "x"}],
    [{"role": "user", "content": [{"type": "audio"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    [{"role": "user", "content": 5}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
    ["not a dict"],
])
def test_malformed_messages_are_rejected(messages):
    with pytest.raises(InvalidRequest):
        to_conversation(Request(messages=messages))


def test_event_fraction_and_finality():
    e = Event("r", State.GENERATING, tokens=5, max_tokens=20)
    assert e.fraction == 0.25 and not e.is_final
    assert Event("r", State.CANCELLED, tokens=5, max_tokens=20).fraction == 1.0
