"""Benchmark: intake + prepare of a 12 MP phone JPEG (EXIF orientation 6) down to the balanced tier.

Ours (`prepare_image`: header check, draft-mode decode, banded resize, rotate) against the plain path
(`Image.open → ImageOps.exif_transpose → convert("RGB") → resize`) to the same size with the same bicubic
filter, same file, interleaved runs, medians, ratio. The content hash is lazy and timed on its own.
Target: ≤ 60 ms on the 2-core dev machine and ≥ 3× faster than plain.

    python bench/image_prepare.py [--runs 15] [--out bench/results/image_prepare-<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageOps
from provenance import git_commit

import optascan
from optascan.images.prepare import TIERS, prepare_image, target_size


def phone_photo(path: Path, size=(4032, 3024)) -> None:
    """A photo-like 12 MP JPEG: smooth gradients, shapes, sensor-like noise; stored sideways, EXIF says 6."""
    rng = np.random.default_rng(0)
    w, h = size
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = np.stack([200 * x + 30 * y, 120 + 80 * y * x, 180 - 120 * y + 0 * x], axis=-1)
    base += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for i in range(40):
        x0, y0 = int(rng.integers(0, w - 400)), int(rng.integers(0, h - 300))
        draw.rectangle([x0, y0, x0 + 300, y0 + 200], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw.text((x0 + 10, y0 + 10), f"Coffee ${i}", fill=(0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, format="JPEG", quality=90, exif=exif.tobytes())


def plain(path: Path, size: tuple[int, int]) -> Image.Image:
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return image.resize(size, Image.Resampling.BICUBIC)


def ours(path: Path) -> Image.Image:
    return prepare_image(path, tier="balanced").image


def ours_with_hash(path: Path) -> str:
    return prepare_image(path, tier="balanced").content_hash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phone.jpg"
        phone_photo(path)
        with Image.open(path) as probe:
            stored = probe.size
        upright = (stored[1], stored[0])
        size = target_size(*upright, TIERS["balanced"])
        assert ours(path).size == plain(path, size).size == size
        times: dict[str, list[float]] = {"ours": [], "plain": [], "ours_with_hash": []}
        paths = [("plain", lambda: plain(path, size)), ("ours", lambda: ours(path)),
                 ("ours_with_hash", lambda: ours_with_hash(path))]
        for run in range(args.runs):
            # rotate the order: whichever path follows the plain one pays for the memory it just freed
            for name, fn in paths[run % 3:] + paths[:run % 3]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        file_bytes = path.stat().st_size
        a, b = np.asarray(ours(path), dtype=np.float32), np.asarray(plain(path, size), dtype=np.float32)
        mean_abs_diff = float(np.abs(a - b).mean())
    median = {k: statistics.median(v) for k, v in times.items()}
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "image_prepare",
        "date": now.isoformat(timespec="seconds"),
        **git_commit(),
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
        "versions": {"python": platform.python_version(), "pillow": PIL.__version__, "numpy": np.__version__,
                     "optascan": optascan.__version__},
        "input": {"stored_size": list(stored), "exif_orientation": 6, "bytes": file_bytes},
        "target_size": list(size), "tier": "balanced", "runs": args.runs,
        "median_ms": {k: v * 1000 for k, v in median.items()},
        "all_ms": {k: [t * 1000 for t in v] for k, v in times.items()},
        "speedup": median["plain"] / median["ours"],
        "mean_abs_pixel_diff": mean_abs_diff,
        "targets": {"ours_ms_max": 60, "speedup_min": 3},
    }
    out = Path(args.out or f"bench/results/image_prepare-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"12 MP JPEG {stored[0]}×{stored[1]} (orientation 6) → {size[0]}×{size[1]}: ours "
          f"{median['ours'] * 1000:.1f} ms (with hash {median['ours_with_hash'] * 1000:.1f} ms), "
          f"plain {median['plain'] * 1000:.1f} ms, speedup "
          f"{report['speedup']:.1f}×, mean |Δpixel| {mean_abs_diff:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
