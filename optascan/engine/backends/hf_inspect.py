"""What the HF backend reads from a checkpoint, its processor and the installed transformers."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...errors import OptascanError
from ...images.tokens import ProcessorLimits, processor_limits

log = logging.getLogger(__name__)


def image_inputs_digest(encoded: Any, images: Sequence[Any]) -> str:
    """The pictures' identity: a digest of the images themselves (mode, size, pixels) and of the processor's
    other image outputs (grids, sizes). The processor is deterministic, so equal images give equal pixel
    tensors; hashing those instead cost ~30 ms a request for one 1024×768 image on Qwen2-VL (19 MB of float32
    patches, copied, then hashed), in the TTFT of every request with an image."""
    digest = hashlib.blake2b(digest_size=16)
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(np.asarray(image))  # the buffer as it is: no copy to bytes
    for name in sorted(encoded.keys()):
        value = encoded[name]
        if name in ("input_ids", "attention_mask", "mm_token_type_ids") or name.startswith("pixel_"):
            continue
        if isinstance(value, torch.Tensor):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_kwarg_name() -> str:
    # transformers 5.24 renamed generate()'s past_key_values to cache (the old name warns until 6.0)
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


CACHE_KWARG = cache_kwarg_name()


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def image_processor_config(processor: Any) -> dict | None:
    """The image processor's settings plus the processor-level keys that decide the image token count."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return None
    merged = dict(image_processor.to_dict())
    for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_seq_len",
                "image_seq_length"):
        if getattr(processor, key, None) is not None:
            merged[key] = getattr(processor, key)
    return merged


def image_limits(model_type: str, config: dict | None) -> ProcessorLimits | None:
    if config is None:
        return None
    try:
        return processor_limits(model_type, config)
    except OptascanError:  # a family the table does not know: the tier alone sizes its images
        log.info("no processor limits known for %s", model_type)
        return None


def image_token_id(config: Any) -> int | None:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
