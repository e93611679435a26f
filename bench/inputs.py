"""Inputs the benchmarks share: a menu-like 1024×768 photo, a Qwen2-VL-architecture checkpoint whose processor
has the real model's pixel budget (so that photo is ~1,000 image tokens, not the test size's 15), and a LLaVA one
with LLaVA-1.5's 576-token image grid."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from optascan.testing.tiny import build_tiny_checkpoint

QWEN2_VL_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}  # the real processor's defaults


def menu_photo() -> Image.Image:
    image = Image.new("RGB", (1024, 768), (235, 230, 220))
    draw = ImageDraw.Draw(image)
    for row in range(12):  # a menu-like page: lines of "text" blocks
        draw.rectangle([60, 50 + row * 58, 60 + 40 * (row % 5 + 6), 80 + row * 58], fill=(40, 40, 40))
    return image


def qwen2_vl_checkpoint(path: Path, text_size: str | dict, dtype: str | None = None) -> Path:
    """A random-weight Qwen2-VL checkpoint at ``path`` with ``text_size``'s language model and real pixel limits."""
    path = build_tiny_checkpoint("qwen2_vl", path, text_size=text_size, dtype=dtype)
    config_path = path / "processor_config.json"
    config = json.loads(config_path.read_text())
    for key in ("image_processor", "video_processor"):
        if key in config:
            config[key]["size"] = QWEN2_VL_PIXELS
    config_path.write_text(json.dumps(config, indent=2))
    return path


def llava_checkpoint(path: Path, text_size: str | dict, dtype: str | None = None) -> Path:
    """A random-weight LLaVA checkpoint with LLaVA-1.5's image grid (336 px in 14 px patches: 576 image tokens)
    and ``text_size``'s language model; the vision tower itself stays tiny."""
    return build_tiny_checkpoint("llava", path, text_size=text_size, dtype=dtype, llava_image=(336, 14))
