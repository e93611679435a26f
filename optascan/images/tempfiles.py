"""Temp files for backends that need an image path: private, metadata-free, always removed.

    with image_file(prepared.image) as path:
        backend_that_wants_a_path(path)

The directory is created with mode 0700 (``tempfile.mkdtemp``), the image is re-encoded from pixels only
(no EXIF, GPS or other metadata survives), and the directory is removed on success, error, cancellation
and KeyboardInterrupt alike.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

PREFIX = "optascan-img-"


@contextmanager
def image_file(image: Image.Image, *, suffix: str = ".png") -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        path = directory / f"image{suffix}"
        clean = Image.new(image.mode, image.size)
        clean.paste(image)  # pixels only: the new image carries no info, EXIF or ICC data
        clean.save(path)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def leftovers(root: str | None = None) -> list[Path]:
    """Temp directories of ours still present (tests check this is empty after every test)."""
    return sorted(Path(root or tempfile.gettempdir()).glob(PREFIX + "*"))
