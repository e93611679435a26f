"""The tiny checkpoints from optascan.testing.tiny load and run through the stock transformers Auto* path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from optascan.testing.tiny import FAMILIES, build_tiny_checkpoint

VLMS = [f for f in FAMILIES if f != "llama_text"]
SAMPLE = "café 日本語 🙂"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_checkpoint(f, root / f, seed=0) for f in FAMILIES}


def _expected_image_tokens(family, model, processor, enc) -> int:
    """How many image-token ids the model will consume for one image, from the model/processor side."""
    if family == "llava":
        return model.config.image_seq_length
    if family == "idefics3":
        return processor.image_seq_len
    merge = model.config.vision_config.spatial_merge_size
    return int(enc["image_grid_thw"][0].prod()) // merge**2


@pytest.mark.parametrize("family", VLMS)
def test_vlm_loads_and_generates(checkpoints, family):
    path = checkpoints[family]
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tok = processor.tokenizer
    assert model.dtype == torch.float32

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith(tok.bos_token) and text.endswith("assistant\n")
    assert "What is this?" in text and tok.eos_token in text  # eos doubles as end-of-turn marker

    enc = processor(text=text, images=[Image.new("RGB", (40, 30), (200, 30, 30))], return_tensors="pt")
    ids = enc["input_ids"][0]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # template bos only, no double bos
    image_token_id = model.config.image_token_id
    assert image_token_id == tok.convert_tokens_to_ids(tok.image_token)
    n_image = int((ids == image_token_id).sum())
    assert 0 < n_image == _expected_image_tokens(family, model, processor, enc)
    assert 4 <= n_image <= 20

    with torch.no_grad():
        logits = model(**enc).logits  # raises if image tokens and image features disagree
    assert logits.shape == (1, ids.shape[0], model.config.text_config.vocab_size)
    if family == "qwen2_vl":  # M-RoPE really ran: image positions are 2-D, so the text offset shifts
        assert model.model.rope_deltas is not None and int(model.model.rope_deltas.abs().sum()) > 0

    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert 1 <= out.shape[1] - ids.shape[0] <= 5

    # String content and a second image-free turn go through the same template.
    text_only = processor.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert "Hi" in text_only and processor(text=text_only, return_tensors="pt")["input_ids"].shape[1] > 3


def test_llama_text_loads_and_generates(checkpoints):
    path = checkpoints["llama_text"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(Exception, match="text-only"):  # an image part is refused, not silently dropped
        tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == model.config.vocab_size == len(tok)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert 1 <= out.shape[1] - enc["input_ids"].shape[1] <= 5


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_and_config_agree(checkpoints, family):
    path = checkpoints[family]
    tok = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    text_config = config.get_text_config()
    model_cls = AutoModelForCausalLM if family == "llama_text" else AutoModelForImageTextToText
    gen = model_cls.from_pretrained(path).generation_config

    ids = tok.encode(SAMPLE, add_special_tokens=False)
    assert tok.decode(ids) == SAMPLE
    assert any(len(tok.encode(ch, add_special_tokens=False)) >= 2 for ch in SAMPLE if ord(ch) > 127)
    assert 400 <= len(tok) <= 1000 and text_config.vocab_size == len(tok)
    assert text_config.eos_token_id == gen.eos_token_id == tok.eos_token_id
    assert gen.pad_token_id == tok.pad_token_id is not None and tok.bos_token_id is not None
    assert text_config.max_position_embeddings >= 2048


def test_same_seed_same_bytes(tmp_path):
    a = build_tiny_checkpoint("qwen2_vl", tmp_path / "a", seed=3)
    b = build_tiny_checkpoint("qwen2_vl", tmp_path / "b", seed=3)
    c = build_tiny_checkpoint("qwen2_vl", tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert not list(a.glob("*.bin")) and not list(a.glob("*.pt"))  # safetensors only, no pickle


def test_cli_prints_path(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "optascan.testing.tiny", str(tmp_path / "ck"), "--family", "llama_text"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").is_file()


def test_vision_size_overrides_the_tiny_tower_and_loads(tmp_path):
    """Benchmarks ask for a model card's vision tower: the fields land in the saved config, the rest stays tiny,
    and the checkpoint loads through from_pretrained with the bigger tower's weights."""
    from transformers import AutoModelForImageTextToText

    path = build_tiny_checkpoint("qwen2_5_vl", tmp_path / "q", vision_size={"depth": 3, "fullatt_block_indexes": [2]})
    model = AutoModelForImageTextToText.from_pretrained(path)
    vision = model.config.vision_config
    assert (vision.depth, vision.fullatt_block_indexes, vision.hidden_size) == (3, [2], 32)
    assert len(model.model.visual.blocks) == 3
    with pytest.raises(ValueError, match="vision_size"):
        build_tiny_checkpoint("idefics3", tmp_path / "i", vision_size={"num_hidden_layers": 3})
    assert not (tmp_path / "i").exists()  # refused before anything is written
