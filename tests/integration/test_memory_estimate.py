"""Memory known before loading: the estimate against what transformers really allocates, and the refusal."""

from __future__ import annotations

import gc
import json
import shutil
import weakref

import pytest
import torch

import optascan
from optascan.errors import ModelLoadError, ModelTooLarge
from optascan.models.estimate import count_parameters, estimate

FAMILIES = ["llava", "qwen2_vl", "idefics3", "llama_text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_estimate_is_exact_and_kv_per_token_matches_the_real_cache(tiny_engine, tiny_dir, family):
    engine = tiny_engine(family)
    est = estimate(tiny_dir(family), dtype="float32", context_tokens=1000)
    assert est.weights_bytes == engine.info.weight_bytes
    assert est.params == sum(p.numel() for p in engine.backend.model.parameters())
    # run a prefill and measure the KV cache transformers keeps
    ids = torch.tensor([[1] * 37])
    with torch.inference_mode():
        out = engine.backend.language_model(input_ids=ids, use_cache=True)
    cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
    kv = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
             for layer in cache.layers)
    assert est.kv_bytes_per_token == kv // 37
    assert est.total_bytes > est.weights_bytes + 1000 * est.kv_bytes_per_token


def test_bf16_halves_the_weights_of_an_fp32_checkpoint(tiny_dir):
    assert estimate(tiny_dir("llava"), dtype="bfloat16").weights_bytes * 2 == estimate(
        tiny_dir("llava"), dtype="float32").weights_bytes


def test_loading_beyond_the_budget_is_refused_before_anything_loads(tiny_dir):
    with pytest.raises(ModelTooLarge) as info:
        optascan.load(tiny_dir("llava"), device="cpu", memory_fraction=1e-9)
    err = info.value
    assert err.needed_bytes > 0 and err.available_bytes > 0 and err.recoverable
    assert "budget" in str(err) and "optascan models" in err.hint


def test_sharded_and_missing_weights(tiny_dir, tmp_path):
    params, stored = count_parameters(tiny_dir("llama_text"))
    assert stored == params * 4
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8}))
    with pytest.raises(ModelLoadError, match="safetensors"):
        estimate(empty)
    # two shards count as the sum
    shutil.copy(tiny_dir("llama_text") / "model.safetensors", empty / "model-00001-of-00002.safetensors")
    shutil.copy(tiny_dir("llama_text") / "model.safetensors", empty / "model-00002-of-00002.safetensors")
    assert count_parameters(empty) == (2 * params, 2 * stored)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_close_lets_every_weight_go(tiny_dir, family):
    # The H100 check found the weights still held after close (the backend kept its hooked submodules), so device
    # memory never returned to the level before the load. Nothing of the model may outlive close().
    engine = optascan.load(tiny_dir(family), device="cpu")
    engine.generate(prompt="hi", max_tokens=2)
    weights = [weakref.ref(p) for p in engine.backend.model.parameters()]
    engine.close()
    gc.collect()
    assert [w for w in weights if w() is not None] == []
