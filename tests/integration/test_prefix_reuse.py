"""A follow-up turn reuses the previous request's KV cache: same tokens as a cold run, no second vision encoding."""

from __future__ import annotations

import pytest
from PIL import Image

FAMILIES = ["llava", "qwen2_vl", "idefics3", "llama_text"]


def conversation(family: str, image: Image.Image) -> list[dict]:
    parts = [] if family == "llama_text" else [{"type": "image", "image": image}]
    return [{"role": "system", "content": "You rank options."},
            {"role": "user", "content": [*parts, {"type": "text", "text": "Which is the cheapest?"}]}]


def follow_up(first: list[dict], reply: str) -> list[dict]:
    return [*first, {"role": "assistant", "content": reply},
            {"role": "user", "content": [{"type": "text", "text": "And the most filling under $15?"}]}]


@pytest.fixture
def vision_calls(tiny_engine):
    def count(engine) -> list[int]:
        calls = [0]
        tower = engine.backend.vision_tower
        if tower is not None:
            handle = tower.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
            handles.append(handle)
        return calls

    handles: list = []
    yield count
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_follow_up_reuses_the_prefix_and_matches_a_cold_run(tiny_engine, family, vision_calls):
    engine = tiny_engine(family)
    photo, other = Image.new("RGB", (320, 240), (200, 40, 40)), Image.new("RGB", (240, 320), (40, 40, 200))
    first = conversation(family, photo)
    reply = engine.generate(messages=first, max_tokens=12, ignore_eos=True, seed=1)
    calls = vision_calls(engine)
    warm = engine.generate(messages=follow_up(first, reply.text), max_tokens=16, ignore_eos=True, seed=2)

    reused = warm.metadata["prefix_reused_tokens"]
    assert reused >= reply.usage.prompt_tokens  # the whole first prompt (image included) came from the cache
    assert reused < warm.usage.prompt_tokens
    assert calls[0] == 0  # the image was not encoded again

    engine.generate(messages=conversation(family, other) + [], max_tokens=4, seed=3)  # the cache now holds another
    cold = engine.generate(messages=follow_up(first, reply.text), max_tokens=16, ignore_eos=True, seed=2)
    if family != "llama_text":
        assert cold.metadata["prefix_reused_tokens"] == 0  # a different image: nothing reusable
        assert calls[0] == 2  # the other photo, then this one again
    assert cold.text == warm.text
    assert cold.usage == warm.usage


def test_a_cancelled_follow_up_keeps_the_image_prefix_for_the_retry(tiny_engine):
    from optascan import CancelToken

    engine = tiny_engine("qwen2_vl")
    first = conversation("qwen2_vl", Image.new("RGB", (320, 240), (10, 200, 10)))
    reply = engine.generate(messages=first, max_tokens=6, seed=1)
    token = CancelToken()
    token.cancel("changed my mind")
    cancelled = engine.generate(messages=follow_up(first, reply.text), max_tokens=8, cancel=token)
    assert cancelled.finish_reason.value == "cancelled"
    retry = engine.generate(messages=follow_up(first, reply.text), max_tokens=8, seed=2)
    assert retry.metadata["prefix_reused_tokens"] >= reply.usage.prompt_tokens


def test_a_same_size_picture_with_other_pixels_is_not_reused(tiny_engine):
    # equal token ids (same size, so the same number of image tokens), other pixels: the image key tells them apart
    engine = tiny_engine("qwen2_vl")
    photo, repainted = Image.new("RGB", (320, 240), (200, 40, 40)), Image.new("RGB", (320, 240), (200, 40, 41))
    first = conversation("qwen2_vl", photo)
    reply = engine.generate(messages=first, max_tokens=8, ignore_eos=True, seed=1)
    same = engine.generate(messages=follow_up(first, reply.text), max_tokens=4, seed=2)
    assert same.metadata["prefix_reused_tokens"] >= reply.usage.prompt_tokens
    swapped = follow_up(conversation("qwen2_vl", repainted), reply.text)
    other = engine.generate(messages=swapped, max_tokens=4, seed=2)
    assert other.usage.prompt_tokens == same.usage.prompt_tokens
    assert other.metadata["prefix_reused_tokens"] == 0
