"""Inputs the benchmarks share: a menu-like 1024×768 photo, a Qwen2-VL-architecture checkpoint whose processor
has the real model's pixel budget (so that photo is ~1,000 image tokens, not the test size's 15), and a LLaVA one
with LLaVA-1.5's 576-token image grid. Their vision towers are tiny unless ``vision="full"``: then the Qwen
sizes are the Qwen2.5-VL architecture with its model card's tower (32 blocks of width 1280, windowed attention)
and LLaVA's is CLIP ViT-L/14 at 336 px, so time to first token includes a real tower's work."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from PIL import Image, ImageDraw

from optascan.testing.tiny import build_tiny_checkpoint

# vision-config fields of the public model cards (Qwen2.5-VL-3B/7B share theirs; LLaVA-1.5: CLIP ViT-L/14-336)
FULL_VISION = {
    "qwen2_5_vl": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
    "llava": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  projection_dim=768),
}
QWEN2_VL_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}  # the real processor's defaults


MENU_PROMPT = "Describe this menu and list every dish with its price."


def menu_request(photo: Image.Image | None = None) -> dict:
    """The GPU benchmarks' request (engine.generate keywords): the menu photo at the quality tier + MENU_PROMPT."""
    return {"prompt": MENU_PROMPT, "images": [photo or menu_photo()], "image_tier": "quality"}


def menu_photo() -> Image.Image:
    image = Image.new("RGB", (1024, 768), (235, 230, 220))
    draw = ImageDraw.Draw(image)
    for row in range(12):  # a menu-like page: lines of "text" blocks
        draw.rectangle([60, 50 + row * 58, 60 + 40 * (row % 5 + 6), 80 + row * 58], fill=(40, 40, 40))
    return image


def benchmark_checkpoint(path: Path, size: str, text_size: str | dict, dtype: str | None = None,
                         vision: str = "tiny") -> tuple[Path, str]:
    """(the checkpoint, its family) for a benchmark size: LLaVA for ``llava*`` sizes, else Qwen2-VL (tiny tower)
    or Qwen2.5-VL (``vision="full"``)."""
    if vision not in ("tiny", "full"):
        raise ValueError(f"vision is 'tiny' or 'full', not {vision!r}")
    family = "llava" if size.startswith("llava") else "qwen2_5_vl" if vision == "full" else "qwen2_vl"
    # a folder that already holds this very checkpoint is reused: several scripts of one GPU call share one
    # build (a 7B one takes minutes to write) through --checkpoint
    key = json.dumps({"size": size, "text_size": text_size, "dtype": dtype, "vision": vision})
    marker = path / "bench_checkpoint.json"
    if marker.is_file() and marker.read_text() == key:
        return path, family
    import torch

    build = functools.partial(llava_checkpoint, vision=vision) if family == "llava" \
        else functools.partial(qwen2_vl_checkpoint, family=family)
    try:  # random weights drawn on the GPU: minutes faster for a 7B than on the host
        build(path, text_size, dtype, init_device="cuda" if torch.cuda.is_available() else None)
    except (RuntimeError, torch.cuda.OutOfMemoryError):
        build(path, text_size, dtype)
    if torch.cuda.is_available():  # the build's weights must not count in the first path's peak memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    marker.write_text(key)
    return path, family


def qwen2_vl_checkpoint(path: Path, text_size: str | dict, dtype: str | None = None,
                        family: str = "qwen2_vl", init_device: str | None = None) -> Path:
    """A random-weight Qwen2-VL checkpoint at ``path`` with ``text_size``'s language model and real pixel limits
    (``family="qwen2_5_vl"``: Qwen2.5-VL with its full-size tower)."""
    path = build_tiny_checkpoint(family, path, text_size=text_size, dtype=dtype,
                                 vision_size=FULL_VISION.get(family), init_device=init_device)
    config_path = path / "processor_config.json"
    config = json.loads(config_path.read_text())
    for key in ("image_processor", "video_processor"):
        if key in config:
            config[key]["size"] = QWEN2_VL_PIXELS
    config_path.write_text(json.dumps(config, indent=2))
    return path


def llava_checkpoint(path: Path, text_size: str | dict, dtype: str | None = None, *, vision: str = "tiny",
                     init_device: str | None = None) -> Path:
    """A random-weight LLaVA checkpoint with LLaVA-1.5's image grid (336 px in 14 px patches: 576 image tokens)
    and ``text_size``'s language model; the vision tower is tiny, or CLIP ViT-L's with ``vision="full"``."""
    return build_tiny_checkpoint("llava", path, text_size=text_size, dtype=dtype, llava_image=(336, 14),
                                 vision_size=FULL_VISION["llava"] if vision == "full" else None,
                                 init_device=init_device)
