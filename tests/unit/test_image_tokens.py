"""optascan.images.tokens against hand-computed values (the real processors are checked in
tests/integration/test_image_tokens_real.py)."""

import pathlib
import subprocess
import sys

import pytest

from optascan.errors import ImageError, InvalidRequest, ModelError, OptascanError
from optascan.images import tokens
from optascan.images.tokens import ProcessorLimits, estimate_image_tokens, processor_limits, smart_resize

# Qwen2-VL-2B/7B-Instruct style: patch 14, merge 2 (28 px per token), 56*56 .. 28*28*1280 pixels.
QWEN = {"size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}, "patch_size": 14, "merge_size": 2}
# Idefics3-8B style: longest edge 4*364, tiles of 364, 169 tokens per tile.
IDEFICS3 = {"do_image_splitting": True, "size": {"longest_edge": 1456}, "max_image_size": {"longest_edge": 364},
            "image_seq_len": 169}
# llava-1.5 style: CLIP-L/14 at 336, CLS dropped by the "default" strategy.
LLAVA = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "do_center_crop": True,
         "patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}


@pytest.mark.parametrize(("width", "height", "tokens"), [
    (640, 480, 17 * 23),  # round(480/28)=17, round(640/28)=23; 476*644 px is within bounds
    (4032, 3024, 30 * 41),  # over max_pixels: beta=sqrt(12192768/1003520)=3.4857 -> floor(30.98), floor(41.31)
    (3024, 4032, 41 * 30),
    (1, 1, 4),  # rounds to 0x0, under min_pixels: beta=56 -> 2x2
    (14, 14, 4),  # 14/28 = 0.5 rounds half-to-even to 0 -> min branch -> 2x2
    (70, 70, 4),  # 70/28 = 2.5 rounds half-to-even to 2 (floor(x+0.5) would give 3x3 = 9)
    (42, 42, 4),  # 1.5 rounds to 2
    (200, 1, 29),  # aspect 200 is allowed; min branch: beta=sqrt(3136/200)=3.96 -> ceil(0.14)=1 x ceil(28.3)=29
    (100, 100, 16),  # round(3.57)=4 -> 4x4
])
def test_qwen2_vl_smart_resize_counts(width, height, tokens):
    assert estimate_image_tokens("qwen2_vl", QWEN, width, height) == tokens
    assert estimate_image_tokens("qwen2_5_vl", QWEN, width, height) == tokens  # same image processor


def test_qwen_smart_resize_returns_pixel_sizes_divisible_by_the_factor():
    assert smart_resize(480, 640, 28, 56 * 56, 28 * 28 * 1280) == (476, 644)
    assert smart_resize(3024, 4032, 28, 56 * 56, 28 * 28 * 1280) == (840, 1148)


def test_qwen_top_level_min_max_pixels_override_size_like_the_processor_init():
    cfg = {**QWEN, "max_pixels": 28 * 28 * 16, "min_pixels": 28 * 28 * 4}
    assert estimate_image_tokens("qwen2_vl", cfg, 4032, 3024) <= 16
    assert estimate_image_tokens("qwen2_vl", cfg, 1, 1) == 4
    # older preprocessor_config.json files carry only the top-level keys
    assert estimate_image_tokens("qwen2_vl", {"min_pixels": 3136, "max_pixels": 1003520}, 640, 480) == 391
    assert estimate_image_tokens("qwen2_vl", {}, 640, 480) == 391  # class defaults


@pytest.mark.parametrize(("width", "height"), [(201, 1), (1, 201), (10000, 1), (37, 9999)])
def test_qwen_rejects_aspect_ratios_above_200_like_the_processor(width, height):
    with pytest.raises(ImageError, match="aspect ratio") as info:
        estimate_image_tokens("qwen2_vl", QWEN, width, height)
    assert isinstance(info.value, ValueError) and info.value.recoverable


@pytest.mark.parametrize(("width", "height", "tiles"), [
    (640, 480, 3 * 4),  # -> 1456x1092 -> 4 cols x 3 rows of 364
    (4032, 3024, 3 * 4),  # same aspect ratio, same count: the long edge always goes to 1456
    (3024, 4032, 4 * 3),
    (1, 1, 4 * 4),  # upscaled to 1456x1456
    (1456, 1456, 4 * 4),
    (10000, 1, 1 * 4),  # 1456 x max(int(0.1456), 1) = 1 -> rounded up to one 364 row
    (37, 1999, 4 * 1),  # int(1456 * 37/1999) = 26 -> one 364 column
    (364, 200, 3 * 4),  # 1456 x 800 -> 1456 x 1092
])
def test_idefics3_splitting_counts_tiles_plus_the_global_image(width, height, tiles):
    assert estimate_image_tokens("idefics3", IDEFICS3, width, height) == 169 * (tiles + 1)
    assert estimate_image_tokens("smolvlm", IDEFICS3, width, height) == 169 * (tiles + 1)


def test_idefics3_a_tile_sized_result_is_a_single_image():
    cfg = {**IDEFICS3, "size": {"longest_edge": 364}}
    assert estimate_image_tokens("idefics3", cfg, 640, 480) == 169  # 364x274 -> 364x364: no split


def test_idefics3_without_splitting_is_always_image_seq_len():
    cfg = {**IDEFICS3, "do_image_splitting": False, "image_seq_len": 64}
    assert {estimate_image_tokens("smolvlm", cfg, w, h) for w, h in [(1, 1), (640, 480), (10000, 1)]} == {64}


def test_idefics3_defaults_match_the_processor_classes():
    assert estimate_image_tokens("idefics3", {}, 640, 480) == 169 * 13  # 1456 / 364, image_seq_len 169


@pytest.mark.parametrize(("cfg", "tokens"), [
    (LLAVA, 576),
    ({**LLAVA, "vision_feature_select_strategy": "full"}, 577),
    ({**LLAVA, "num_additional_image_tokens": 0, "vision_feature_select_strategy": "full"}, 576),
    ({**LLAVA, "crop_size": {"height": 32, "width": 32}, "patch_size": 8}, 16),  # the tiny checkpoint
])
def test_llava_is_fixed_by_crop_size(cfg, tokens):
    for width, height in [(1, 1), (640, 480), (3024, 4032), (10000, 1)]:
        assert estimate_image_tokens("llava", cfg, width, height) == tokens


def test_llava_without_center_crop_follows_the_shortest_edge_resize():
    cfg = {**LLAVA, "do_center_crop": False}
    assert estimate_image_tokens("llava", cfg, 640, 480) == 24 * 32  # 336 x int(448.0)
    assert estimate_image_tokens("llava", cfg, 480, 640) == 32 * 24
    assert estimate_image_tokens("llava", {**cfg, "do_pad": True}, 640, 480) == 24 * 24  # padded to a square


def test_llava_without_patch_size_is_a_model_error():
    with pytest.raises(ModelError, match="patch_size"):
        estimate_image_tokens("llava", {k: v for k, v in LLAVA.items() if k != "patch_size"}, 64, 64)


def test_a_saved_processor_config_json_is_flattened():
    saved = {"image_processor": {k: v for k, v in LLAVA.items() if k not in ("patch_size",)}, "patch_size": 14,
             "processor_class": "LlavaProcessor", "video_processor": {"patch_size": 99}}
    assert estimate_image_tokens("llava", saved, 640, 480) == 576
    assert estimate_image_tokens("idefics3", {"image_processor": IDEFICS3, "image_seq_len": 9}, 640, 480) == 169 * 13


def test_fixed_length_families():
    assert estimate_image_tokens("gemma3", {"size": {"height": 896, "width": 896}}, 4032, 3024) == 256
    assert estimate_image_tokens("gemma3", {"image_seq_length": 64}, 1, 1) == 64
    assert estimate_image_tokens("paligemma", {"image_seq_length": 1024}, 640, 480) == 1024
    assert estimate_image_tokens("mllama", {"max_image_tiles": 4}, 4032, 3024) == 1
    with pytest.raises(ModelError, match="pan-and-scan"):
        estimate_image_tokens("gemma3", {"do_pan_and_scan": True}, 640, 480)


def test_unknown_model_type_is_a_model_error_naming_the_known_ones():
    for call in (lambda: estimate_image_tokens("llava_onevision", {}, 64, 64),
                 lambda: processor_limits("blip_2", {})):
        with pytest.raises(ModelError, match="no image-token rule") as info:
            call()
        assert isinstance(info.value, OptascanError) and "qwen2_vl" in info.value.message


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-1, 5)])
def test_non_positive_sizes_are_invalid_requests(width, height):
    with pytest.raises(InvalidRequest):
        estimate_image_tokens("qwen2_vl", QWEN, width, height)


@pytest.mark.parametrize(("model_type", "cfg", "limits"), [
    ("qwen2_vl", QWEN, ProcessorLimits(max_side=None, max_pixels=28 * 28 * 1280, min_side=28)),
    ("qwen2_5_vl", {**QWEN, "max_pixels": 12845056}, ProcessorLimits(None, 12845056, 28)),
    ("idefics3", IDEFICS3, ProcessorLimits(max_side=1456, max_pixels=None, min_side=None)),
    ("smolvlm", {"size": {"longest_edge": 2048}, "max_image_size": {"longest_edge": 512}},
     ProcessorLimits(2048, None, None)),
    ("idefics3", {**IDEFICS3, "size": {"longest_edge": 8000}}, ProcessorLimits(4096, None, None)),
    ("idefics3", {**IDEFICS3, "do_image_splitting": False}, ProcessorLimits(364, None, 364)),
    ("llava", LLAVA, ProcessorLimits(max_side=None, max_pixels=None, min_side=336)),
    ("llava", {**LLAVA, "size": {"height": 336, "width": 336}}, ProcessorLimits(336, None, 336)),
    ("llava", {**LLAVA, "do_resize": False}, ProcessorLimits(None, None, None)),
    ("gemma3", {"size": {"height": 896, "width": 896}}, ProcessorLimits(896, None, 896)),
    ("paligemma", {"size": {"height": 448, "width": 448}, "image_seq_length": 1024}, ProcessorLimits(448, None, 448)),
    ("mllama", {"size": {"height": 560, "width": 560}, "max_image_tiles": 4},
     ProcessorLimits(2240, 560 * 560 * 4, None)),
])
def test_processor_limits(model_type, cfg, limits):
    assert processor_limits(model_type, cfg) == limits


def test_the_module_imports_neither_torch_nor_transformers():
    # optascan/__init__ pulls in the engine (and torch), so stand in a bare package and import only the module
    package_dir = pathlib.Path(tokens.__file__).parents[1]
    code = (f"import sys, types; pkg = types.ModuleType('optascan'); pkg.__path__ = [{str(package_dir)!r}]; "
            "sys.modules['optascan'] = pkg; import optascan.images.tokens as t; "
            "print(t.estimate_image_tokens('qwen2_vl', {}, 640, 480)); "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["391", "[]"]
