"""Image intake and preparation over a corpus the tests generate: every input kind, every bad input."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from optascan import ImageDecodeError, ImageNotFound, ImageTooLarge, InvalidRequest
from optascan.images.intake import IntakeSettings, open_image
from optascan.images.prepare import TIERS, prepare_image, target_size
from optascan.images.tempfiles import image_file, leftovers
from optascan.images.tokens import ProcessorLimits

RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def marked(size=(120, 80)) -> Image.Image:
    """Blue, with a red block in the top-left corner: orientation is checked by where the red ends up."""
    image = Image.new("RGB", size, BLUE)
    image.paste(Image.new("RGB", (size[0] // 3, size[1] // 3), RED), (0, 0))
    return image


def colour_at(image: Image.Image, x: float, y: float) -> tuple[int, ...]:
    return image.getpixel((int(x * (image.width - 1)), int(y * (image.height - 1))))


def near(a, b, tol=40) -> bool:
    return all(abs(int(p) - int(q)) <= tol for p, q in zip(a, b, strict=True))


# --- every way a photo arrives -----------------------------------------------------------------------
def test_every_input_kind_gives_the_same_rgb_image(tmp_path):
    data = encode(marked())
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    sources = [str(path), path, data, io.BytesIO(data), marked(), np.asarray(marked()),
               base64.b64encode(data).decode(), "data:image/png;base64," + base64.b64encode(data).decode()]
    images = [prepare_image(s).image for s in sources]
    assert all(im.mode == "RGB" and im.size == (120, 80) for im in images)
    assert all(im.tobytes() == images[0].tobytes() for im in images)


@pytest.mark.parametrize("source, error, words", [
    (b"", ImageDecodeError, "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ImageDecodeError, "not an image"),
    (bytes(range(256)) * 8, ImageDecodeError, "not an image"),
    (b"hello, I am a text file, not a JPEG\n" * 3, ImageDecodeError, "not an image"),
    ("data:text/plain,hello", ImageDecodeError, "data: URL"),
    ("data:image/png;base64,@@@not-base64@@@", ImageDecodeError, "base64"),
    ("/no/such/photo.jpg", ImageNotFound, "not found"),
    ("http://example.com/a.jpg", InvalidRequest, "not fetched"),
    ("file:///etc/passwd", InvalidRequest, "file:"),
    (12345, InvalidRequest, "unsupported"),
    (np.zeros((4, 4), dtype=np.float32), InvalidRequest, "uint8"),
])
def test_bad_inputs_get_typed_errors_naming_the_reason(source, error, words):
    with pytest.raises(error) as info:
        prepare_image(source)
    assert words in str(info.value)
    assert info.value.recoverable  # fix the input and retry: the engine is fine


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_fail_with_a_decode_error(fmt):
    data = encode(Image.effect_noise((400, 300), 60).convert("RGB"), fmt)
    with pytest.raises(ImageDecodeError) as info:
        prepare_image(data[: len(data) // 2])
    assert "truncated" in str(info.value) or "decode" in str(info.value)


def png_bomb(width=40000, height=40000) -> bytes:
    """A real one-colour PNG of 1.6 G pixels in about 200 KB (1-bit greyscale, streamed through zlib)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLarge) as info:
        prepare_image(bomb)
    assert "40000×40000" in str(info.value) or "bomb" in str(info.value)


def test_gif_bombs_are_refused_or_only_their_first_frame_is_used():
    # a 1×1 frame on a 65535×65535 logical screen
    screen = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
              + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")
    with pytest.raises(ImageTooLarge):
        prepare_image(screen)
    frames = [Image.new("P", (64, 64), i % 200) for i in range(300)]  # many frames
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert prepare_image(data).image.size == (64, 64)


def test_pixel_and_byte_caps_are_configurable_and_named_in_the_error():
    data = encode(marked((200, 100)))
    with pytest.raises(ImageTooLarge, match=r"200×100.*cap is 0\.0 MP"):
        prepare_image(data, settings=IntakeSettings(max_pixels=10_000))
    with pytest.raises(ImageTooLarge, match="limit"):
        prepare_image(data, settings=IntakeSettings(max_bytes=100))
    assert open_image(data, IntakeSettings(max_pixels=20_000)).size == (200, 100)  # header only, not decoded


@pytest.mark.parametrize("size", [(1, 1), (10000, 1), (1, 10000)])
def test_extreme_shapes_work(size):
    prepared = prepare_image(encode(Image.new("RGB", size, RED)))
    assert prepared.image.mode == "RGB" and max(prepared.size) <= TIERS["balanced"].max_side
    assert min(prepared.size) >= 1 and near(colour_at(prepared.image, 0.5, 0.5), RED)


# --- formats and modes --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt):
    prepared = prepare_image(encode(marked(), fmt))
    assert prepared.format == fmt and prepared.image.mode == "RGB"
    assert near(colour_at(prepared.image, 0.05, 0.05), RED, 60) and near(colour_at(prepared.image, 0.9, 0.9), BLUE, 60)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_when_a_plugin_supports_them(fmt):
    try:
        data = encode(marked(), fmt, quality=90)
    except (KeyError, OSError) as err:
        pytest.skip(f"{fmt} not supported by this Pillow build: {err}")
    prepared = prepare_image(data)
    assert near(colour_at(prepared.image, 0.05, 0.05), RED, 60)


def test_modes_become_rgb_with_alpha_over_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (20, 40), (0, 0, 255, 255)), (0, 0))
    out = prepare_image(encode(rgba)).image
    assert near(colour_at(out, 0.1, 0.5), (0, 0, 255), 5) and near(colour_at(out, 0.9, 0.5), WHITE, 5)
    la = Image.new("LA", (10, 10), (0, 0))
    assert near(colour_at(prepare_image(encode(la)).image, 0.5, 0.5), WHITE, 5)
    palette = marked().convert("P", palette=Image.Palette.ADAPTIVE)
    assert near(colour_at(prepare_image(encode(palette)).image, 0.05, 0.05), RED, 30)
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # pure red in CMYK
    assert near(colour_at(prepare_image(encode(cmyk, "JPEG")).image, 0.5, 0.5), (255, 0, 0), 50)
    grey = Image.new("L", (10, 10), 128)
    assert prepare_image(encode(grey)).image.getpixel((5, 5)) == (128, 128, 128)


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    data = encode(image)
    out = prepare_image(data).image
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((63, 0)) == (255, 255, 255)
    assert 120 <= out.getpixel((32, 0))[0] <= 135  # mid-grey, not clipped to white


# --- orientation --------------------------------------------------------------------------------------
UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations_are_applied(orientation):
    upright = marked((160, 90))
    stored = upright.transpose(UNDO[orientation]) if orientation in UNDO else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    prepared = prepare_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert prepared.size == (160, 90)  # upright again
    assert near(colour_at(prepared.image, 0.05, 0.05), RED) and near(colour_at(prepared.image, 0.95, 0.95), BLUE)
    assert prepared.exif_orientation == orientation
    assert prepared.describe()["rotated"] == {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}[orientation]


# --- sizing ---------------------------------------------------------------------------------------------
def test_tiers_cap_side_and_area_keeping_the_aspect_ratio():
    assert target_size(4032, 3024, TIERS["quality"]) == (2048, 1536)
    w, h = target_size(4032, 3024, TIERS["balanced"])
    assert w * h <= 1024 * 1024 and abs(w / h - 4 / 3) < 0.01
    assert target_size(300, 200, TIERS["battery"]) == (300, 200)  # never upscaled


def test_processor_limits_cap_size_but_never_below_what_the_processor_upscales_to():
    limits = ProcessorLimits(max_side=512, max_pixels=None, min_side=None)
    assert target_size(4000, 2000, TIERS["balanced"], limits) == (512, 256)
    clip = ProcessorLimits(max_side=None, max_pixels=None, min_side=336)
    assert target_size(4000, 400, TIERS["battery"], clip) == (3360, 336)


def test_large_jpeg_is_decoded_in_draft_mode(monkeypatch):
    scales = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        scales.append(result[1] if result else None)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    photo = Image.effect_noise((4000, 3000), 40).convert("RGB")
    prepared = prepare_image(encode(photo, "JPEG", quality=80), tier="battery")
    assert scales and scales[0] is not None  # the decoder was asked to downscale
    assert max(prepared.size) <= TIERS["battery"].max_side


def test_content_hash_depends_on_pixels_and_settings_only():
    a = prepare_image(encode(marked(), "PNG"))
    b = prepare_image(marked())
    assert a.content_hash == b.content_hash
    assert prepare_image(marked(), tier="battery").content_hash != a.content_hash  # the settings count too
    assert prepare_image(marked((121, 80))).content_hash != a.content_hash


# --- temp files -----------------------------------------------------------------------------------------
def test_image_file_is_private_metadata_free_and_always_removed(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # camera make: must not survive
    source = Image.open(io.BytesIO(encode(marked(), "JPEG", exif=exif.tobytes())))
    with image_file(prepare_image(source).image) as path:
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        reread = Image.open(path)
        assert not reread.getexif() and reread.size == (120, 80)
    assert not path.exists() and not path.parent.exists()
    for interruption in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with image_file(marked()) as path:
                raise interruption
        assert not path.parent.exists()
    assert leftovers() == []


def test_banded_parallel_resize_matches_a_single_resize():
    from optascan.images.prepare import resize

    source = Image.effect_noise((1601, 1203), 70).convert("RGB")
    for size in [(900, 677), (1000, 751), (333, 250)]:
        single = np.asarray(source.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        banded = np.asarray(resize(source, size), dtype=np.int16)
        assert banded.shape == single.shape and np.abs(banded - single).max() <= 1
