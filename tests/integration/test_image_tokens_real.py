"""estimate_image_tokens / processor_limits against the REAL transformers processors.

The count must equal the number of ``config.image_token_id`` ids the processor puts into ``input_ids`` for
one image. The tiny checkpoints give real processors (llava, qwen2_vl, idefics3); the real models' settings
(Qwen2-VL's 56*56 .. 28*28*1280 pixels, Idefics3's 1456/364 split, SmolVLM's 2048/512) are built around
their tokenizers. Processor-only: no model forward.
"""

from __future__ import annotations

import json
import warnings

import pytest
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    Idefics3ImageProcessor,
    Idefics3Processor,
    LlavaImageProcessor,
    LlavaProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    SmolVLMImageProcessor,
)

from optascan.errors import ImageError
from optascan.images.tokens import ProcessorLimits, estimate_image_tokens, processor_limits

# 1x1 and 10000x1 included: llava and idefics3 accept every size; Qwen2-VL rejects aspect ratios above 200
# (ValueError "absolute aspect ratio must be smaller than 200, got 10000.0") and so must the estimate.
SIZES = [(1, 1), (2, 3), (13, 13), (14, 14), (27, 29), (70, 70), (100, 100), (200, 1), (201, 1), (10000, 1),
         (1, 10000), (640, 480), (480, 640), (333, 444), (1000, 999), (4032, 3024), (3024, 4032), (37, 1999),
         (1999, 37)]
QWEN_REAL = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, merge_size=2)


def merged_config(processor) -> dict:
    """The image processor's dict plus the processor-level keys, as the HF backend builds it."""
    merged = dict(processor.image_processor.to_dict())
    for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_seq_len"):
        if getattr(processor, key, None) is not None:
            merged[key] = getattr(processor, key)
    return merged


def real_count(processor, image_token_id: int, width: int, height: int) -> int:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = processor(text=[text], images=[Image.new("RGB", (width, height))], return_tensors="pt")["input_ids"]
    return int((ids == image_token_id).sum())


def assert_same(model_type, processor, image_token_id, config, sizes=SIZES):
    for width, height in sizes:
        try:
            expected = real_count(processor, image_token_id, width, height)
        except ValueError as err:  # the processor rejects the size: the estimate must reject it too
            assert "aspect ratio" in str(err), err
            with pytest.raises(ImageError):
                estimate_image_tokens(model_type, config, width, height)
            continue
        got = estimate_image_tokens(model_type, config, width, height)
        assert got == expected, f"{model_type} {width}x{height}: estimate {got}, processor {expected}"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    def load(family):
        path = tiny_dir(family)
        config = AutoConfig.from_pretrained(path)
        token_id = getattr(config, "image_token_id", None) or config.image_token_index
        return path, config, AutoProcessor.from_pretrained(path), token_id
    return load


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_tiny_checkpoints_match_the_real_processor(tiny, family):
    path, config, processor, token_id = tiny(family)
    assert_same(config.model_type, processor, token_id, merged_config(processor))
    # the saved processor_config.json (nested image_processor) gives the same answers
    saved = json.loads((path / "processor_config.json").read_text())
    assert_same(config.model_type, processor, token_id, saved, sizes=[(640, 480), (37, 1999), (1, 1)])


def test_qwen2_rejects_extreme_aspect_ratios_in_both(tiny):
    _, config, processor, token_id = tiny("qwen2_vl")
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        real_count(processor, token_id, 10000, 1)
    with pytest.raises(ImageError, match="aspect ratio"):
        estimate_image_tokens("qwen2_vl", merged_config(processor), 10000, 1)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_with_the_real_models_defaults(tiny, model_type):
    _, config, tiny_processor, token_id = tiny("qwen2_vl")
    cls = Qwen2VLProcessor if model_type == "qwen2_vl" else Qwen2_5_VLProcessor
    processor = cls(image_processor=Qwen2VLImageProcessor(**QWEN_REAL), video_processor=Qwen2VLVideoProcessor(),
                    tokenizer=tiny_processor.tokenizer, chat_template=tiny_processor.chat_template)
    assert_same(model_type, processor, token_id, merged_config(processor))
    assert real_count(processor, token_id, 4032, 3024) == 1230  # the hand-computed value of the unit test
    # an older preprocessor_config.json style: top-level min/max_pixels, no size
    assert estimate_image_tokens(model_type, QWEN_REAL, 4032, 3024) == 1230
    assert processor_limits(model_type, merged_config(processor)) == ProcessorLimits(None, 28 * 28 * 1280, 28)


def test_qwen_min_side_is_where_the_processor_upscales():
    """A shorter side under one merged patch (28 px) always comes out as at least 28 px."""
    processor = Qwen2VLImageProcessor(**QWEN_REAL)
    limits = processor_limits("qwen2_vl", processor.to_dict())
    for width, height in [(1000, 27), (27, 1000), (5000, 25), (20, 20)]:
        grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")["image_grid_thw"][0]
        assert min(int(grid[1]), int(grid[2])) * 14 >= limits.min_side > min(width, height)


def test_idefics3_tiny_with_image_splitting(tiny):
    _, config, processor, token_id = tiny("idefics3")
    processor.image_processor.do_image_splitting = True
    processor.image_processor.size = {"longest_edge": 4 * 48}  # 4x4 tiles of the tiny 48 px vision tower
    assert_same("idefics3", processor, token_id, merged_config(processor))
    assert real_count(processor, token_id, 640, 480) == 9 * (3 * 4 + 1)
    assert processor_limits("idefics3", merged_config(processor)) == ProcessorLimits(4 * 48, None, None)


def test_idefics3_with_the_real_models_defaults(tiny):
    _, _, tiny_processor, token_id = tiny("idefics3")
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(), tokenizer=tiny_processor.tokenizer,
                                  image_seq_len=169, chat_template=tiny_processor.chat_template)
    sizes = [(1, 1), (10000, 1), (640, 480), (4032, 3024), (3024, 4032), (37, 1999), (364, 200), (1456, 1457),
             (365, 364), (729, 100)]
    assert_same("idefics3", processor, token_id, merged_config(processor), sizes=sizes)
    assert processor_limits("idefics3", merged_config(processor)) == ProcessorLimits(1456, None, None)


@pytest.mark.parametrize("size", [(1, 1), (10000, 1), (640, 480), (4032, 3024), (37, 1999), (1025, 1024)])
def test_smolvlm_image_processor_rows_and_cols(size):
    """SmolVLMProcessor needs num2words, so check its image processor's rows/cols: the processor expands
    <image> to image_seq_len * (rows*cols + 1) tokens when split, image_seq_len when not."""
    image_processor = SmolVLMImageProcessor(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
    out = image_processor(images=[Image.new("RGB", size)], return_row_col_info=True)
    rows, cols = out["rows"][0][0], out["cols"][0][0]
    expected = 64 * (rows * cols + 1) if rows or cols else 64
    config = {**image_processor.to_dict(), "image_seq_len": 64}
    assert estimate_image_tokens("smolvlm", config, *size) == expected
    assert processor_limits("smolvlm", config) == ProcessorLimits(2048, None, None)


@pytest.mark.parametrize("do_pad", [False, True])
def test_llava_without_center_crop_varies_with_the_size(tiny, do_pad):
    _, config, tiny_processor, token_id = tiny("llava")
    processor = LlavaProcessor(
        image_processor=LlavaImageProcessor(size={"shortest_edge": 32}, do_center_crop=False, do_pad=do_pad),
        tokenizer=tiny_processor.tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=tiny_processor.chat_template)
    sizes = [(1, 1), (13, 7), (640, 480), (480, 640), (37, 1999), (100, 33)]
    assert_same("llava", processor, token_id, merged_config(processor), sizes=sizes)
    assert real_count(processor, token_id, 640, 480) == (16 if do_pad else 4 * 5)  # 32x42 px -> 4x5 patches


def test_llava_limits_from_the_tiny_processor(tiny):
    _, _, processor, _ = tiny("llava")
    assert processor_limits("llava", merged_config(processor)) == ProcessorLimits(None, None, 32)
    assert processor_limits("idefics3", merged_config(tiny("idefics3")[2])) == ProcessorLimits(48, None, 48)
