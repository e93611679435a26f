"""The fast engine's compiling in a second process while the weights load (early_compile.py), on the CPU: the
stand-in decoder it compiles has the real one's shapes, what it compiles is what the load then finds in torch's
cache on disk, and when it fails or runs long the load goes on without it. (Its effect on a GPU's warm-up:
bench/fast_warmup.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import optascan
from optascan.engine.backends.fast.early_compile import EarlyCompile, stand_in, start_if_useful
from optascan.testing.tiny import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_the_stand_in_is_the_real_decoder_with_one_layer(tiny_dir, family):
    with optascan.load(tiny_dir(family), device="cpu", engine="fast") as engine:
        real = engine.backend.decoder
        one = stand_in(tiny_dir(family), "cpu", real.k_cache.dtype, 8192)
        assert one.shape == dataclasses.replace(real.shape, layers=1)
        assert one.max_tokens == real.max_tokens
        # compiled graphs are keyed on their inputs' kinds, shapes and strides, not only on the decoder's shape
        for ours, theirs in [(one.qkv_weight[0], real.qkv_weight[0]), (one.o[0].weight, real.o[0].weight),
                             (one.gate_up_weight[0], real.gate_up_weight[0]), (one.norm_in[0], real.norm_in[0]),
                             (one.lm_head.weight, real.lm_head.weight), (one.inv_freq, real.inv_freq)]:
            assert (type(ours), ours.shape, ours.stride(), ours.dtype, ours.requires_grad) == \
                (type(theirs), theirs.shape, theirs.stride(), theirs.dtype, theirs.requires_grad)
        assert (one.qkv_bias[0] is None) == (real.qkv_bias[0] is None)
        assert one.rope_scale == real.rope_scale


def test_the_load_finds_what_the_early_compile_built_in_the_cache(tiny_dir, tmp_path, monkeypatch):
    """The second process compiles the stand-in into an empty torch.compile cache; the load's own compiling
    (its 16-token prompt, off CUDA) then finds every graph there: cache hits, no misses."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("OPTASCAN_FAST_COMPILE", "1")
    report = EarlyCompile(tiny_dir("llava"), "cpu", "float32", 8192).finish()
    assert report["early_compile"] == "done"
    assert any((tmp_path / "inductor" / "fxgraph").rglob("*")), "the second process compiled nothing"
    torch._dynamo.reset()
    counters.clear()
    try:
        with optascan.load(tiny_dir("llava"), device="cpu", engine="fast") as engine:
            assert engine.backend.decoder.compiled
            assert counters["inductor"]["fxgraph_cache_hit"] == 2  # the prompt's two halves of a layer
            assert counters["inductor"]["fxgraph_cache_miss"] == 0
    finally:
        torch._dynamo.reset()


def test_a_failed_or_slow_early_compile_is_reported_and_stopped(tmp_path):
    failed = EarlyCompile(tmp_path / "no-model", "cpu", "float32", 64).finish()
    assert failed["early_compile"].startswith("failed (exit 1)")
    assert "no-model" in failed["early_compile"]  # its own error's tail, for the warm-up report
    slow = EarlyCompile(tmp_path / "no-model", "cpu", "float32", 64)
    report = slow.finish(timeout=0.01)  # still starting Python
    assert report["early_compile"] == "stopped after waiting 0 s"
    assert slow.process.poll() is not None  # killed, not left running


def test_it_starts_only_on_cuda_for_a_compiled_step(tiny_dir, monkeypatch):
    assert start_if_useful(tiny_dir("llava"), "cpu", "float32", 64, compile_step=True) is None
    assert start_if_useful(tiny_dir("llava"), "cuda", "bfloat16", 64, compile_step=False) is None
    monkeypatch.setenv("OPTASCAN_FAST_EARLY_COMPILE", "0")
    assert start_if_useful(tiny_dir("llava"), "cuda", "bfloat16", 64, compile_step=True) is None
