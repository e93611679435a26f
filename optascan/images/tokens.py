"""How many image-placeholder tokens a model's processor emits for one image, and the sizes it will use.

Pure Python (no torch, no transformers), so the engine can budget context and size images before it loads
anything heavy. Each function re-implements the resize arithmetic of the transformers 5 processors
(``models/{qwen2_vl,idefics3,smolvlm,llava,...}``) step by step, float operations included, because the
count must equal the number of ``config.image_token_id`` tokens the real processor puts into ``input_ids``;
tests/integration/test_image_tokens_real.py checks that against the real processors.

``image_processor`` is ``processor.image_processor.to_dict()`` (or ``preprocessor_config.json``) with the
processor-level keys merged into the same mapping: ``patch_size``, ``vision_feature_select_strategy``,
``num_additional_image_tokens`` (llava), ``image_seq_len`` (idefics3/smolvlm), ``image_seq_length``
(gemma3). A ``processor_config.json`` as saved (``{"image_processor": {...}, "patch_size": ...}``) is
accepted too and flattened, its ``image_processor`` keys winning. Missing keys take the class defaults.

Families differ only by data: ``_RULES`` maps a config ``model_type`` to one of a few resize rules.
A model_type not in the table raises ``optascan.errors.ModelError`` (callers treat it as "unknown": no
limits, no estimate) -- guessing a count for an unknown processor would be worse than saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ImageError, InvalidRequest, ModelError


@dataclass(frozen=True)
class ProcessorLimits:
    """The processor's own size bounds, so our downscaling neither wastes work nor loses what it would keep.

    ``max_side``: longest side the processor ever uses (a longer input is downscaled by it anyway).
    ``max_pixels``: likewise for the area. ``min_side``: if the image's *shorter* side is below this, the
    processor upscales it (so downscaling below it only loses detail); ``prepare.target_size`` applies it to
    ``min(width, height)``. None: no such bound, or none expressible this way for the family.
    """

    max_side: int | None
    max_pixels: int | None
    min_side: int | None


# model_type -> rule. Qwen2.5-VL uses Qwen2-VL's image processor and expansion; SmolVLM's image processor is
# Idefics3's (generated from it) with the same <image> * image_seq_len expansion.
_RULES = {
    "qwen2_vl": "qwen", "qwen2_5_vl": "qwen",
    "idefics3": "idefics3", "smolvlm": "idefics3",
    "llava": "clip",
    "paligemma": "fixed", "gemma3": "fixed",
    "mllama": "mllama",
}
_QWEN_MAX_RATIO = 200  # smart_resize raises ValueError above this aspect ratio
_IDEFICS3_MAX_IMAGE_SIZE = 4096  # image_processing_idefics3.MAX_IMAGE_SIZE: absolute cap after the resize


def _flat(cfg: Mapping) -> dict:
    nested = cfg.get("image_processor")
    if isinstance(nested, Mapping):
        return {**{k: v for k, v in cfg.items() if not k.endswith("_processor")}, **nested}
    return dict(cfg)


def _rule(model_type: str) -> str:
    if model_type not in _RULES:
        raise ModelError(f"no image-token rule for model_type {model_type!r}; known: {', '.join(_RULES)}",
                         hint="image token counts and size limits are unknown for this model family")
    return _RULES[model_type]


def _edge(cfg: dict, key: str, edge: str, default: int) -> int:
    value = cfg.get(key) or {}
    return int(value.get(edge) or default) if isinstance(value, Mapping) else int(value)


def _hw(value, default: int) -> tuple[int, int]:
    """A crop/size setting as (height, width): {"height", "width"}, {"shortest_edge"} (square) or an int."""
    if isinstance(value, Mapping):
        if value.get("height") and value.get("width"):
            return int(value["height"]), int(value["width"])
        value = value.get("shortest_edge")
    side = int(value or default)
    return side, side


# --- Qwen2-VL / Qwen2.5-VL -----------------------------------------------------------------------------
def _qwen_params(cfg: dict) -> tuple[int, int, int, int]:
    """(patch, merge, min_pixels, max_pixels). Top-level min/max_pixels override size, as in __init__."""
    size = cfg.get("size") or {}
    min_pixels = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or 56 * 56
    max_pixels = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or 28 * 28 * 1280
    return int(cfg.get("patch_size") or 14), int(cfg.get("merge_size") or 2), int(min_pixels), int(max_pixels)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen2_vl's smart_resize, verbatim arithmetic (note Python's round-half-to-even in the first step)."""
    if max(height, width) / min(height, width) > _QWEN_MAX_RATIO:
        raise ImageError(f"a {width}×{height} image is too elongated for this model (aspect ratio above "
                         f"{_QWEN_MAX_RATIO}:1)", hint="crop or pad the image to a less extreme aspect ratio")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen_tokens(cfg: dict, width: int, height: int) -> int:
    # grid (h/patch)*(w/patch) patches, merged merge×merge into one token each
    patch, merge, min_pixels, max_pixels = _qwen_params(cfg)
    h, w = smart_resize(height, width, patch * merge, min_pixels, max_pixels)
    return (h // (patch * merge)) * (w // (patch * merge))


# --- Idefics3 / SmolVLM --------------------------------------------------------------------------------
def _idefics3_tokens(cfg: dict, width: int, height: int) -> int:
    seq = int(cfg.get("image_seq_len") or 169)  # Idefics3Processor's default; real checkpoints store it
    if not cfg.get("do_image_splitting", True):
        return seq  # the whole image is squashed to one max_image_size square
    tile = _edge(cfg, "max_image_size", "longest_edge", 364)
    if cfg.get("do_resize", True):
        size = cfg.get("size") or {"longest_edge": 4 * 364}
        if size.get("longest_edge"):  # longest edge -> exactly longest_edge, up or down; other side even
            height, width = _rescale_to_max_len(height, width, int(size["longest_edge"]))
            height, width = _scale_below(height, width, _IDEFICS3_MAX_IMAGE_SIZE)
        else:
            height, width = int(size["height"]), int(size["width"])
    # resize_for_vision_encoder: round the long side up to a tile multiple, derive the other from the aspect
    # ratio and round it up too (the real code, not get_number_of_image_patches, which differs here)
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    if height > tile or width > tile:  # rows×cols tiles plus the global image, each image_seq_len tokens
        return seq * ((height // tile) * (width // tile) + 1)
    return seq


def _rescale_to_max_len(height: int, width: int, max_len: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width, height = max_len, int(max_len / aspect)
        height += height % 2
    else:
        height, width = max_len, int(max_len * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def _scale_below(height: int, width: int, max_len: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height and width > max_len:
        width, height = max_len, int(max_len / aspect)
    elif height > width and height > max_len:
        height, width = max_len, int(max_len * aspect)
    return max(height, 1), max(width, 1)


# --- LLaVA (CLIP-style: resize shortest edge, center crop) ---------------------------------------------
def _clip_size(cfg: dict, width: int, height: int) -> tuple[int, int]:
    """(height, width) of the pixel_values the CLIP/LLaVA image processor returns."""
    if cfg.get("do_center_crop", True):
        return _hw(cfg.get("crop_size"), 224)  # center_crop pads a smaller image, so always exactly this
    if cfg.get("do_pad"):  # LlavaImageProcessor pads to a square first
        width = height = max(width, height)
    size = cfg.get("size") or {"shortest_edge": 224}
    if not cfg.get("do_resize", True):
        return height, width
    if isinstance(size, Mapping) and size.get("shortest_edge") and not size.get("height"):
        short, long = sorted((width, height))
        new_short, new_long = int(size["shortest_edge"]), int(int(size["shortest_edge"]) * long / short)
        return (new_long, new_short) if height > width else (new_short, new_long)
    return _hw(size, 224)


def _clip_tokens(cfg: dict, width: int, height: int) -> int:
    patch = cfg.get("patch_size")
    if not patch:
        raise ModelError("the llava processor config has no patch_size; transformers 5 cannot expand <image>",
                         hint="merge the processor's patch_size into the image processor config")
    h, w = _clip_size(cfg, width, height)
    count = (h // int(patch)) * (w // int(patch)) + int(cfg.get("num_additional_image_tokens") or 0)
    return count - 1 if cfg.get("vision_feature_select_strategy") == "default" else count  # CLS dropped


# --- fixed-length families -----------------------------------------------------------------------------
def _fixed_tokens(cfg: dict) -> int:
    if cfg.get("do_pan_and_scan"):  # gemma3's crops add image_seq_length tokens per crop: not modelled
        raise ModelError("gemma3 pan-and-scan token counts are not supported", hint="turn do_pan_and_scan off")
    return int(cfg.get("image_seq_length") or 256)  # paligemma: image processor key; gemma3: processor key


def estimate_image_tokens(model_type: str, image_processor: Mapping, width: int, height: int) -> int:
    """Image-placeholder tokens (``config.image_token_id``) the processor emits for one ``width×height`` image.

    Raises ModelError for an unknown model_type, ImageError for a size the processor itself rejects
    (Qwen2-VL: aspect ratio above 200:1), InvalidRequest for a non-positive size.
    """
    if width < 1 or height < 1:
        raise InvalidRequest(f"image size must be positive, got {width}×{height}", field="image")
    rule, cfg = _rule(model_type), _flat(image_processor)
    if rule == "qwen":
        return _qwen_tokens(cfg, width, height)
    if rule == "idefics3":
        return _idefics3_tokens(cfg, width, height)
    if rule == "clip":
        return _clip_tokens(cfg, width, height)
    if rule == "mllama":
        return 1  # one <|image|> token; the vision tiles go in through cross-attention, not the sequence
    return _fixed_tokens(cfg)


def processor_limits(model_type: str, image_processor: Mapping) -> ProcessorLimits:
    """The sizes the processor of ``model_type`` will actually use (see ProcessorLimits). Raises ModelError
    for an unknown model_type."""
    rule, cfg = _rule(model_type), _flat(image_processor)
    if rule == "qwen":  # area-bound only; a shorter side under one merged patch is always rounded up to it
        patch, merge, _, max_pixels = _qwen_params(cfg)
        return ProcessorLimits(max_side=None, max_pixels=max_pixels, min_side=patch * merge)
    if rule == "idefics3":
        tile = _edge(cfg, "max_image_size", "longest_edge", 364)
        if not cfg.get("do_image_splitting", True):  # squashed to a tile×tile square: both sides end at tile
            return ProcessorLimits(max_side=tile, max_pixels=None, min_side=tile)
        # The longest edge is rescaled to size.longest_edge up *or* down, so the token count does not depend
        # on the input scale; the floor is on the long side, which min_side (shorter side) cannot express.
        longest = min(_edge(cfg, "size", "longest_edge", 4 * 364), _IDEFICS3_MAX_IMAGE_SIZE)
        return ProcessorLimits(max_side=longest, max_pixels=None, min_side=None)
    if rule == "mllama":  # fitted, aspect kept, into a canvas of at most max_image_tiles tiles
        tile, tiles = _hw(cfg.get("size"), 560)[0], int(cfg.get("max_image_tiles") or 4)
        return ProcessorLimits(max_side=tile * tiles, max_pixels=tile * tile * tiles, min_side=None)
    # clip: the shorter side is scaled to shortest_edge (then center-cropped); fixed: resized to exactly h×w.
    # Either way the long side is not bounded independently of the aspect ratio, the short side is.
    size = cfg.get("size") or {"shortest_edge": 224}
    if rule == "clip" and not cfg.get("do_resize", True):  # raw pixels, only cropped/padded: no size bound
        return ProcessorLimits(max_side=None, max_pixels=None, min_side=None)
    if rule == "clip" and isinstance(size, Mapping) and size.get("shortest_edge"):
        return ProcessorLimits(max_side=None, max_pixels=None, min_side=int(size["shortest_edge"]))
    h, w = _hw(size, 224)
    return ProcessorLimits(max_side=max(h, w), max_pixels=None, min_side=min(h, w))
