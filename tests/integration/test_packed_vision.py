"""The fast engine's packed vision attention (optascan/engine/backends/fast/vision.py) on tiny real Qwen2-VL and
Qwen2.5-VL checkpoints: the model's logits with its vision tower switched to one SDPA call per layer equal
transformers' own per-window loop, for two photos of different sizes in one prompt (uneven windows, two images'
full-attention spans), and the packed call really ran."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from optascan.engine.backends.fast import vision


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_packed_vision_attention_gives_transformers_logits(tiny_dir, family, monkeypatch):
    path = tiny_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    photos = [Image.effect_noise((170, 230), 60).convert("RGB"), Image.new("RGB", (300, 200), (200, 60, 30))]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Which is larger?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=photos, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**inputs).logits
    calls, original = [], vision.packed_attention

    def counted(*args, **kwargs):
        calls.append(kwargs.get("cu_seq_lens_q") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(vision, "packed_attention", counted)
    assert vision.use_packed_attention(model.model.visual)
    with torch.inference_mode():
        packed = model(**inputs).logits
    depth = len(model.model.visual.blocks)
    assert calls == [True] * depth  # every layer, packed
    assert model.config.get_text_config()._attn_implementation == "sdpa"  # the language model untouched
    assert (packed - reference).abs().max().item() < 1e-4


def test_widened_vision_mlps_and_fused_norms_give_the_same_logits(tiny_dir):
    """pad_mlp_widths (Qwen2.5-VL's 3,420-wide vision MLPs, padded for cuBLAS) changes the weights' shapes and
    not the model's output: the padding's gate rows, up rows and down columns are zeros. fuse_rms_norms (one
    kernel per norm) does not change it either."""
    path = tiny_dir("qwen2_5_vl")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.effect_noise((170, 230), 60).convert("RGB")], return_tensors="pt")
    with torch.inference_mode():
        reference = model(**inputs).logits
    blocks = model.model.visual.blocks
    width = blocks[0].mlp.gate_proj.out_features
    assert vision.pad_mlp_widths(model.model.visual, multiple=48) == len(blocks)
    assert blocks[0].mlp.gate_proj.weight.shape[0] == blocks[0].mlp.down_proj.weight.shape[1] == -(-width // 48) * 48
    assert vision.pad_mlp_widths(model.model.visual, multiple=48) == 0  # already wide enough
    with torch.inference_mode():
        widened = model(**inputs).logits
    assert (widened - reference).abs().max().item() < 1e-5
    assert vision.fuse_rms_norms(model.model.visual) == 2 * len(blocks) + 1  # each block's two, the merger's
    with torch.inference_mode():
        fused = model(**inputs).logits
    assert (fused - reference).abs().max().item() < 1e-5
