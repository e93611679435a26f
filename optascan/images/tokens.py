"""How many image-placeholder tokens a model's processor emits for one image, and the sizes it will use.

Pure Python (no torch, no transformers) so the engine can budget context and size images cheaply. The resize
arithmetic of the transformers 5 processors is re-implemented step by step, float operations and truncations
included, because the count must equal the number of ``config.image_token_id`` ids the real processor puts
into ``input_ids``; tests/integration/test_image_tokens_real.py checks that against the real processors.

``image_processor`` is ``processor.image_processor.to_dict()`` (or ``preprocessor_config.json``) with the
processor-level keys merged into it: ``patch_size``, ``vision_feature_select_strategy``,
``num_additional_image_tokens`` (llava), ``image_seq_len`` (idefics3/smolvlm), ``image_seq_length``
(gemma3). A saved ``processor_config.json`` (``{"image_processor": {...}, "patch_size": ...}``) is flattened.
Missing or null keys take the class defaults in ``_FAMILIES``, which maps a config ``model_type`` to a
resize rule: families differ by data only. An unknown model_type raises ``optascan.errors.ModelError``
(callers treat that as "no limits, no estimate"): a guessed count would be worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ImageError, InvalidRequest, ModelError


@dataclass(frozen=True)
class ProcessorLimits:
    """The processor's own size bounds, so our downscaling neither wastes work nor loses what it would keep.

    ``max_side``: longest side the processor ever uses (a longer input is downscaled by it anyway);
    ``max_pixels``: likewise for the area; ``min_side``: a *shorter* side below this is upscaled by the
    processor, so downscaling below it only loses detail (``prepare.target_size`` applies it to
    ``min(width, height)``). None: no such bound, or none a constant of this kind can express.
    """

    max_side: int | None
    max_pixels: int | None
    min_side: int | None


_QWEN = {"size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}, "patch_size": 14, "merge_size": 2}
_IDEFICS3 = {"size": {"longest_edge": 4 * 364}, "max_image_size": {"longest_edge": 364}, "do_image_splitting": True,
             "image_seq_len": 169}
_SQUARE_224 = {"height": 224, "width": 224}
# model_type -> (rule, class defaults). Qwen2.5-VL uses Qwen2-VL's image processor and expansion; SmolVLM's
# image processor is generated from Idefics3's and expands <image> the same way.
_FAMILIES: dict[str, tuple[str, dict]] = {
    "qwen2_vl": ("qwen", _QWEN), "qwen2_5_vl": ("qwen", _QWEN),
    "idefics3": ("idefics3", _IDEFICS3), "smolvlm": ("idefics3", _IDEFICS3),
    "llava": ("clip", {"size": {"shortest_edge": 224}, "crop_size": _SQUARE_224, "do_center_crop": True}),
    "paligemma": ("fixed", {"size": _SQUARE_224, "image_seq_length": 256}),
    "gemma3": ("fixed", {"size": _SQUARE_224, "image_seq_length": 256}),  # Gemma3Processor's default
    "mllama": ("mllama", {"size": _SQUARE_224, "max_image_tiles": 4}),
}
_QWEN_MAX_RATIO = 200  # smart_resize raises ValueError above this aspect ratio
_IDEFICS3_MAX_SIDE = 4096  # image_processing_idefics3.MAX_IMAGE_SIZE, a cap applied after the resize


def _resolve(model_type: str, image_processor: Mapping) -> tuple[str, dict]:
    if model_type not in _FAMILIES:
        raise ModelError(f"no image-token rule for model_type {model_type!r}; known: {', '.join(_FAMILIES)}",
                         hint="image token counts and size limits are unknown for this model family")
    rule, defaults = _FAMILIES[model_type]
    cfg = dict(image_processor)
    if isinstance(cfg.get("image_processor"), Mapping):  # saved processor_config.json; drop video_processor
        cfg = {**{k: v for k, v in cfg.items() if not k.endswith("_processor")}, **cfg["image_processor"]}
    return rule, {**defaults, **{k: v for k, v in cfg.items() if v is not None}}


def _hw(value) -> tuple[int, int]:
    """A size setting as (height, width): {"height", "width"}, {"shortest_edge"} (square) or an int."""
    if isinstance(value, Mapping):
        if value.get("height") and value.get("width"):
            return int(value["height"]), int(value["width"])
        value = value["shortest_edge"]
    return int(value), int(value)


def _qwen_params(cfg: dict) -> tuple[int, int, int, int]:
    """(patch, merge, min_pixels, max_pixels): top-level min/max_pixels override ``size``, as __init__ does."""
    size = cfg["size"]
    low = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or 56 * 56
    high = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or 28 * 28 * 1280
    return int(cfg["patch_size"]), int(cfg["merge_size"]), int(low), int(high)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen2_vl's smart_resize, same arithmetic (note round() is half-to-even: 70/28 = 2.5 -> 2)."""
    if max(height, width) / min(height, width) > _QWEN_MAX_RATIO:
        raise ImageError(f"a {width}×{height} image is too elongated for this model (aspect ratio above "
                         f"{_QWEN_MAX_RATIO}:1)", hint="crop or pad the image to a less extreme aspect ratio")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:  # may overshoot max_pixels for thin images (200x1 -> 28x812)
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen_tokens(cfg: dict, width: int, height: int) -> int:
    patch, merge, low, high = _qwen_params(cfg)  # a token per merge×merge block of patch×patch pixels
    h, w = smart_resize(height, width, patch * merge, low, high)
    return (h // (patch * merge)) * (w // (patch * merge))


def _fit_long_side(height: int, width: int, max_len: int, even: bool) -> tuple[int, int]:
    """Idefics3's _resize_output_size_rescale_to_max_len (even=True: long side := max_len, up or down) and
    _resize_output_size_scale_below_upper_bound (even=False: only if longer)."""
    aspect = width / height
    if width >= height and (even or width > max_len):
        width, height = max_len, int(max_len / aspect)
        height += height % 2 if even else 0
    elif height > width and (even or height > max_len):
        height, width = max_len, int(max_len * aspect)
        width += width % 2 if even else 0
    return max(height, 1), max(width, 1)


def _idefics3_tokens(cfg: dict, width: int, height: int) -> int:
    seq = int(cfg["image_seq_len"])  # a processor-level key (processor_config.json), not the image processor's
    if not cfg["do_image_splitting"]:
        return seq  # the whole image is squashed to one max_image_size square
    tile = int(cfg["max_image_size"]["longest_edge"])
    if cfg.get("do_resize", True):
        if cfg["size"].get("longest_edge"):
            height, width = _fit_long_side(height, width, int(cfg["size"]["longest_edge"]), even=True)
            height, width = _fit_long_side(height, width, _IDEFICS3_MAX_SIDE, even=False)
        else:
            height, width = _hw(cfg["size"])
    # resize_for_vision_encoder: long side up to a tile multiple, the other from the aspect ratio (truncated)
    # and up to a tile multiple too; then split_images cuts rows×cols tiles and adds the global image.
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return seq * ((height // tile) * (width // tile) + 1) if height > tile or width > tile else seq


def _clip_tokens(cfg: dict, width: int, height: int) -> int:
    """LlavaProcessor: (h // patch) * (w // patch) of the returned pixel_values, + extra tokens, - CLS."""
    if not cfg.get("patch_size"):
        raise ModelError("the llava processor config has no patch_size; transformers 5 cannot expand <image>",
                         hint="merge the processor's patch_size into the image processor config")
    size = cfg["size"]
    if cfg["do_center_crop"]:
        h, w = _hw(cfg["crop_size"])  # center_crop pads a smaller image, so the result is always this
    elif not cfg.get("do_resize", True):
        h, w = (max(width, height),) * 2 if cfg.get("do_pad") else (height, width)
    elif isinstance(size, Mapping) and size.get("shortest_edge") and not size.get("height"):
        if cfg.get("do_pad"):  # LlavaImageProcessor pads to a square before resizing
            width = height = max(width, height)
        short, long = sorted((width, height))  # get_resize_output_image_size(default_to_square=False)
        new_short, new_long = int(size["shortest_edge"]), int(int(size["shortest_edge"]) * long / short)
        h, w = (new_long, new_short) if height > width else (new_short, new_long)
    else:
        h, w = _hw(size)
    patch = int(cfg["patch_size"])
    count = (h // patch) * (w // patch) + int(cfg.get("num_additional_image_tokens", 0))
    return count - 1 if cfg.get("vision_feature_select_strategy") == "default" else count


def _fixed_tokens(cfg: dict, width: int, height: int) -> int:
    if cfg.get("do_pan_and_scan"):  # gemma3's crops add image_seq_length tokens each: not modelled
        raise ModelError("gemma3 pan-and-scan token counts are not supported", hint="turn do_pan_and_scan off")
    return int(cfg["image_seq_length"])  # paligemma: an image processor key; gemma3: a processor key


_COUNT = {"qwen": _qwen_tokens, "idefics3": _idefics3_tokens, "clip": _clip_tokens, "fixed": _fixed_tokens,
          "mllama": lambda cfg, width, height: 1}  # one <|image|>; the tiles enter through cross-attention


def estimate_image_tokens(model_type: str, image_processor: Mapping, width: int, height: int) -> int:
    """Image-placeholder tokens (``config.image_token_id``) the processor emits for one ``width×height`` image.

    Raises ModelError for an unknown model_type, ImageError (a ValueError) for a size the processor itself
    rejects (Qwen2-VL: aspect ratio above 200:1), InvalidRequest for a non-positive size.
    """
    if width < 1 or height < 1:
        raise InvalidRequest(f"image size must be positive, got {width}×{height}", field="image")
    rule, cfg = _resolve(model_type, image_processor)
    return _COUNT[rule](cfg, int(width), int(height))


def processor_limits(model_type: str, image_processor: Mapping) -> ProcessorLimits:
    """The sizes the processor of ``model_type`` actually uses (see ProcessorLimits); ModelError if unknown."""
    rule, cfg = _resolve(model_type, image_processor)
    if rule == "qwen":  # area-bound; a shorter side under one merged patch is always rounded up to one
        patch, merge, _, max_pixels = _qwen_params(cfg)
        return ProcessorLimits(max_side=None, max_pixels=max_pixels, min_side=patch * merge)
    if rule == "idefics3":
        tile = int(cfg["max_image_size"]["longest_edge"])
        if not cfg["do_image_splitting"]:  # squashed to a tile×tile square
            return ProcessorLimits(max_side=tile, max_pixels=None, min_side=tile)
        # The long side is rescaled to size.longest_edge up *or* down, so the count never depends on the
        # input's scale; its floor is on the long side, which a shorter-side min_side cannot express.
        longest = cfg["size"].get("longest_edge") or max(_hw(cfg["size"]))
        return ProcessorLimits(max_side=min(int(longest), _IDEFICS3_MAX_SIDE), max_pixels=None, min_side=None)
    if rule == "mllama":  # fitted, aspect kept, into a canvas of at most max_image_tiles tiles
        tile, tiles = _hw(cfg["size"])[0], int(cfg["max_image_tiles"])
        return ProcessorLimits(max_side=tile * tiles, max_pixels=tile * tile * tiles, min_side=None)
    # clip: the shorter side is scaled to shortest_edge, then center-cropped; fixed: resized to exactly h×w.
    # Either way the long side has no bound independent of the aspect ratio; the short side has.
    size = cfg["size"]
    if rule == "clip" and not cfg.get("do_resize", True):  # raw pixels, only cropped or padded
        return ProcessorLimits(max_side=None, max_pixels=None, min_side=None)
    if rule == "clip" and isinstance(size, Mapping) and size.get("shortest_edge") and not size.get("height"):
        return ProcessorLimits(max_side=None, max_pixels=None, min_side=int(size["shortest_edge"]))
    h, w = _hw(size)
    return ProcessorLimits(max_side=max(h, w), max_pixels=None, min_side=min(h, w))
