"""Prepare: decode an opened image upright, in RGB, at the size the request's tier and the model allow.

Order matters for speed: the target size is known from the header, so a large JPEG is decoded in
Pillow's draft mode (DCT-domain downscaling by 1/2, 1/4 or 1/8) and never at full resolution; the resize
runs on all cores; the EXIF rotation is applied after the downscale, on the small image.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageDecodeError, InvalidRequest
from .intake import DEFAULT_SETTINGS, IntakeSettings, open_image
from .tokens import ProcessorLimits


@dataclass(frozen=True)
class SizeTier:
    """Caps for one performance mode. The original app used 560/448/336 px inputs under a 2048 px ceiling
    for small on-device models; these are sized for reading text in photos with today's VLMs."""

    name: str
    max_side: int
    max_pixels: int


TIERS = {
    "quality": SizeTier("quality", 2048, 2048 * 1536),
    "balanced": SizeTier("balanced", 1280, 1024 * 1024),
    "battery": SizeTier("battery", 768, 448 * 448 * 2),
}
DEFAULT_TIER = "balanced"

# EXIF orientation → (clockwise rotation applied, mirrored), and the transposes that undo it.
ORIENTATIONS = {1: (0, False), 2: (0, True), 3: (180, False), 4: (180, True),
                5: (270, True), 6: (90, False), 7: (90, True), 8: (270, False)}
_TRANSPOSE = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
              4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
              6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_90]}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class PreparedImage:
    image: Image.Image  # RGB, upright, at the prepared size
    original_size: tuple[int, int]  # as stored in the file (before rotation)
    exif_orientation: int
    format: str | None
    tier: str
    settings_key: str  # the preparation settings, part of the content hash

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 of the prepared pixels and the settings that made them (computed on first use)."""
        digest = hashlib.sha256(self.settings_key.encode())
        digest.update(self.image.tobytes())
        return digest.hexdigest()

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def rotated(self) -> int:
        return ORIENTATIONS[self.exif_orientation][0]

    @property
    def mirrored(self) -> bool:
        return ORIENTATIONS[self.exif_orientation][1]

    def describe(self) -> dict:
        """What the result's metadata shows about this image."""
        return {"original_size": list(self.original_size), "prepared_size": list(self.size),
                "rotated": self.rotated, "mirrored": self.mirrored, "format": self.format, "tier": self.tier}


def target_size(width: int, height: int, tier: SizeTier, limits: ProcessorLimits | None = None) -> tuple[int, int]:
    """Aspect-preserving size within the tier and the model's processor limits; never upscales, and never
    goes below the side the processor would upscale back to."""
    max_side, max_pixels = tier.max_side, tier.max_pixels
    if limits is not None:
        max_side = min(max_side, limits.max_side or max_side)
        max_pixels = min(max_pixels, limits.max_pixels or max_pixels)
    scale = min(1.0, max_side / max(width, height), math.sqrt(max_pixels / (width * height)))
    if limits is not None and limits.min_side:
        scale = min(1.0, max(scale, limits.min_side / min(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare_image(source: Any, *, tier: str = DEFAULT_TIER, settings: IntakeSettings = DEFAULT_SETTINGS,
                  limits: ProcessorLimits | None = None) -> PreparedImage:
    """Intake + decode + orient + RGB + resize + hash. Typed errors for every bad input."""
    if tier not in TIERS:
        raise InvalidRequest(f"unknown image tier {tier!r}; use one of {', '.join(TIERS)}", field="image_tier")
    image = open_image(source, settings)
    original_size, file_format = image.size, image.format
    orientation = _orientation(image)
    swapped = ORIENTATIONS[orientation][0] in (90, 270)
    upright = (original_size[1], original_size[0]) if swapped else original_size
    width, height = target_size(*upright, TIERS[tier], limits)
    stored_target = (height, width) if swapped else (width, height)
    try:
        if image.format == "JPEG" and stored_target != original_size:
            image.draft("RGB", stored_target)  # decode at 1/2, 1/4 or 1/8 scale, still ≥ the target
        image.load()  # first frame only for animations
        image = _to_rgb(image)
        if image.size != stored_target:
            image = resize(image, stored_target)
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise ImageDecodeError(f"cannot decode the image: {err}") from err
    for step in _TRANSPOSE.get(orientation, []):
        image = image.transpose(step)
    return PreparedImage(image=image, original_size=original_size, exif_orientation=orientation,
                         format=file_format, tier=tier, settings_key=f"{tier}:{image.size}:{limits}")


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resize (what the models' own processors use), in horizontal bands on several threads.

    Pillow releases the GIL while resampling and computes each output row from source coordinates, so
    bands given their source ``box`` reproduce the one-call result while using every core.
    """
    width, height = size
    bands = min(_THREADS, height // 64) if width * height >= _PARALLEL_FROM_PIXELS else 1
    if bands <= 1:
        return image.resize(size, Image.Resampling.BICUBIC)
    scale = image.height / height
    edges = [round(i * height / bands) for i in range(bands + 1)]

    def band(i: int) -> Image.Image:
        top, bottom = edges[i], edges[i + 1]
        return image.resize((width, bottom - top), Image.Resampling.BICUBIC,
                            box=(0, top * scale, image.width, bottom * scale))

    out = Image.new(image.mode, size)
    for i, part in enumerate(_pool().map(band, range(bands))):
        out.paste(part, (0, edges[i]))
    return out


_THREADS = min(4, os.cpu_count() or 1)
_PARALLEL_FROM_PIXELS = 250_000


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="optascan-resize")


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the user their photo
        return 1
    return value if value in ORIENTATIONS else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # convert("RGB") would clip 16-bit and float values at 255; scale the range down instead
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        grey = np.clip(array * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # alpha over white, as a viewer shows it
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")  # CMYK, YCbCr, P, L, 1, LAB, HSV
