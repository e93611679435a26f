"""The zero-copy RGB pixel view (images/pixels.py): the same pixels as numpy's copy, Pillow's memory kept alive
by the view, and None (the caller copies) wherever Pillow cannot export one block of RGBX pixels."""

import gc

import numpy as np
import pytest
from PIL import Image

from optascan.images.pixels import rgbx_view

needs_arrow = pytest.mark.skipif(not hasattr(Image.Image, "__arrow_c_array__"), reason="Pillow < 11.2: no export")


def photo(width: int = 301, height: int = 203) -> Image.Image:
    noise = Image.effect_noise((width, height), 80)
    return Image.merge("RGB", [noise, noise.point(lambda v: 255 - v), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])


@needs_arrow
def test_view_holds_the_photos_pixels_and_does_not_copy_them():
    image = photo()
    view = rgbx_view(image)
    assert view.shape == (203, 301, 4) and view.dtype == np.uint8
    assert np.array_equal(view[..., :3], np.asarray(image))
    assert not view.flags.writeable
    # no copy: a pixel drawn into the photo afterwards shows in the view
    image.putpixel((5, 7), (1, 2, 3))
    assert tuple(view[7, 5, :3]) == (1, 2, 3)


@needs_arrow
def test_view_keeps_the_memory_alive_after_the_photo_is_gone():
    image = photo()
    expected = np.asarray(image).copy()
    view = rgbx_view(image)
    del image
    gc.collect()
    for _ in range(20):  # reuse of freed memory would show as changed pixels
        photo(301, 203).load()
    assert np.array_equal(view[..., :3], expected)


def test_other_modes_and_non_images_give_none():
    assert rgbx_view(photo().convert("L")) is None
    assert rgbx_view(photo().convert("RGBA")) is None
    assert rgbx_view(np.zeros((4, 4, 3), np.uint8)) is None


@needs_arrow
def test_photo_larger_than_one_block_gives_none():
    # Pillow keeps large images in several blocks; the export refuses those and the caller copies
    assert rgbx_view(Image.new("RGB", (4032, 3024))) is None
