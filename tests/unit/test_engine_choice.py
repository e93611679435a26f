"""What engine="auto" picks, and the reason it gives (pure logic)."""

import pytest

from optascan import InvalidRequest
from optascan.engine import choice
from optascan.engine.choice import choose_engine


def test_asked_engines_are_kept_and_auto_explains_itself():
    assert choose_engine("fast", "cpu", "llava") == ("fast", "fast: as asked")
    assert choose_engine("hf", "cuda:0", "qwen2_vl") == ("hf", "hf: as asked")
    engine, why = choose_engine("auto", "cpu", "llava")
    assert engine == "hf" and "for CUDA" in why and "cpu" in why
    engine, why = choose_engine("auto", "cuda:0", "mllama")
    assert engine == "hf" and "does not support mllama" in why


def test_auto_picks_the_fast_engine_on_cuda_for_supported_families_only(monkeypatch):
    assert choose_engine("auto", "cuda:1", "qwen2_vl")[0] == "fast"
    engine, why = choose_engine("auto", "cuda:0", "qwen2_5_vl")
    assert engine == "fast" and "CUDA" in why
    assert choose_engine("auto", "mps", "qwen2_vl")[0] == "hf"
    monkeypatch.setattr(choice, "AUTO_PICKS_FAST_ON_CUDA", False)  # the switch, off: transformers, saying why
    engine, why = choose_engine("auto", "cuda:0", "qwen2_vl")
    assert (engine, "pending" in why) == ("hf", True)


def test_an_unknown_engine_is_a_typed_error():
    with pytest.raises(InvalidRequest, match="engine must be"):
        choose_engine("vllm", "cpu", "llava")
