"""The demo model's eval, as a test oracle: held-out scenes, asked through any surface (API, CLI, server).

``ask(image_bytes, question) -> answer`` is the surface under test. Scenes come from seeds below 100,000,
which training never uses. Each scene is asked in one of three forms: as rendered, rotated in the file
with an EXIF orientation tag that undoes it (so "where" answers are only right if orientation is applied),
or upscaled far beyond the model's input size.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image

from .scenes import sample

VARIANTS = ("plain", "exif_rotated", "large")
# Stored pixels for each EXIF orientation: the upright scene turned so that the tag turns it back.
_STORE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def variant_bytes(image: Image.Image, variant: str, seed: int) -> bytes:
    buf = io.BytesIO()
    if variant == "exif_rotated":
        orientation = (6, 8, 3)[seed % 3]
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.transpose(_STORE[orientation]).save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    elif variant == "large":
        scale = 4000 / max(image.size)
        image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(
            buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def run_eval(ask: Callable[[bytes, str], str], scenes: int = 100, first_seed: int = 0) -> dict:
    """Accuracy per question type and per variant, with the misses (for the note and for debugging)."""
    right: dict[str, list[int]] = {}
    misses = []
    for seed in range(first_seed, first_seed + scenes):
        image, _, questions = sample(seed)
        variant = VARIANTS[seed % len(VARIANTS)]
        data = variant_bytes(image, variant, seed)
        for q in questions:
            answer = ask(data, q.text).strip().rstrip(".").lower()
            ok = answer == q.answer
            right.setdefault(q.kind, []).append(ok)
            right.setdefault(f"variant:{variant}", []).append(ok)
            if not ok:
                misses.append({"seed": seed, "variant": variant, "question": q.text, "expected": q.answer,
                               "answer": answer})
    return {"accuracy": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "questions": sum(len(v) for k, v in right.items() if not k.startswith("variant:")),
            "misses": misses}
