"""Intake: any supported image input → an opened (header-read, not yet decoded) Pillow image.

Accepted: a path (``str`` / ``os.PathLike``), ``bytes``, a binary file object, a ``PIL.Image``, a NumPy
HWC uint8 array, a base64 string, a ``data:`` URL, and ``http(s)`` URLs when the settings allow them.
Before anything is decoded, the byte size and the header's pixel count are checked against the settings;
Pillow's own decompression-bomb protection stays on underneath. Decoding happens in ``prepare.py``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import ImageDecodeError, ImageNotFound, ImageTooLarge, InvalidRequest

MiB = 1024**2
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")
_DATA_URL_RE = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+)?(;[a-zA-Z0-9=.+-]+)*;base64,", re.ASCII)


@dataclass(frozen=True)
class IntakeSettings:
    """Limits applied before decoding. ``allow_urls`` turns on http(s) fetching through the guarded
    fetcher; ``allow_private_urls`` also lets it reach loopback/private/link-local hosts (local setups)."""

    max_pixels: int = 80_000_000  # a 48 MP phone photo fits; a 40000×40000 "bomb" does not
    max_bytes: int = 64 * MiB
    allow_urls: bool = False
    allow_private_urls: bool = False
    fetch_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1 or self.fetch_timeout_s <= 0:
            raise InvalidRequest("image limits must be positive", field="images")


DEFAULT_SETTINGS = IntakeSettings()


def _register_plugins() -> None:
    """HEIC/HEIF through pillow-heif when it is installed (AVIF is built into Pillow ≥ 11.3)."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


_register_plugins()


def open_image(source: Any, settings: IntakeSettings = DEFAULT_SETTINGS) -> Image.Image:
    """Open ``source`` lazily and check its limits; the result is decoded by ``prepare.decode``."""
    if isinstance(source, Image.Image):
        _check_pixels(source.size, settings, "the given image")
        return source
    if _is_numpy_array(source):
        return _from_array(source, settings)
    return _open_bytes(*_read_source(source, settings), settings)


def _read_source(source: Any, settings: IntakeSettings) -> tuple[bytes, str]:
    """The encoded bytes of ``source`` and a short description of it for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _capped(bytes(source), settings, "the given bytes"), "the given bytes"
    if hasattr(source, "read"):
        return _capped(source.read(settings.max_bytes + 1), settings, "the file object"), "the file object"
    if isinstance(source, os.PathLike):
        return _read_path(os.fspath(source), settings)
    if not isinstance(source, str):
        raise InvalidRequest(f"unsupported image input of type {type(source).__name__}", field="images",
                             hint="pass a path, bytes, a PIL image, a NumPy array, base64 or a data: URL")
    if source.startswith("data:"):
        match = _DATA_URL_RE.match(source[:256])
        if not match:
            raise ImageDecodeError("a data: URL must look like 'data:image/png;base64,...'")
        return _b64(source[match.end():], settings), "the data: URL"
    if source.startswith(("http://", "https://")):
        if not settings.allow_urls:
            raise InvalidRequest("image URLs are not fetched unless enabled", field="images",
                                 hint="pass the image's bytes or path, or enable URL images")
        from .fetch import fetch_bytes

        return fetch_bytes(source, max_bytes=settings.max_bytes, timeout_s=settings.fetch_timeout_s,
                           allow_private=settings.allow_private_urls), source
    if source.startswith("file:"):
        raise InvalidRequest("file: URLs are not accepted", field="images", hint="pass the plain path")
    if os.path.exists(source):
        return _read_path(source, settings)
    if len(source) > 64 and _BASE64_RE.match(source[:4096]):
        return _b64(source, settings), "the base64 string"
    raise ImageNotFound(f"image not found: {source[:200]!r}")


def _read_path(path: str, settings: IntakeSettings) -> tuple[bytes, str]:
    if not os.path.isfile(path):
        raise ImageNotFound(f"image not found: {path!r}")
    size = os.path.getsize(path)
    if size > settings.max_bytes:
        raise ImageTooLarge(f"{path!r} is {size / MiB:.1f} MiB; the limit is {settings.max_bytes / MiB:.0f} MiB")
    with open(path, "rb") as f:
        return f.read(), path


def _capped(data: bytes, settings: IntakeSettings, what: str) -> bytes:
    if len(data) > settings.max_bytes:
        raise ImageTooLarge(f"{what} is over the {settings.max_bytes / MiB:.0f} MiB limit")
    return data


def _b64(payload: str, settings: IntakeSettings) -> bytes:
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > settings.max_bytes:
        raise ImageTooLarge(f"the base64 image is over the {settings.max_bytes / MiB:.0f} MiB limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageDecodeError(f"invalid base64 image data: {err}") from err


def _open_bytes(data: bytes, what: str, settings: IntakeSettings) -> Image.Image:
    if not data:
        raise ImageDecodeError(f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns between its soft and hard bomb limits; our own cap decides below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{what} is a decompression bomb: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"{what} is not an image Pillow can read ({_reason(err)})") from err
    _check_pixels(image.size, settings, what)
    return image


def _check_pixels(size: tuple[int, int], settings: IntakeSettings, what: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{what} has no pixels ({width}×{height})")
    if width * height > settings.max_pixels:
        raise ImageTooLarge(f"{what} is {width}×{height} = {width * height / 1e6:.1f} MP; the cap is "
                            f"{settings.max_pixels / 1e6:.1f} MP")


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.replace(" <_io.BytesIO object", "").split(" at 0x")[0]


def _is_numpy_array(source: Any) -> bool:
    return type(source).__module__ == "numpy" and hasattr(source, "shape")


def _from_array(array: Any, settings: IntakeSettings) -> Image.Image:
    import numpy as np

    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InvalidRequest(f"a NumPy image must be HxW or HxWx(1|3|4) uint8, got {array.dtype} "
                             f"{tuple(array.shape)}", field="images")
    _check_pixels((array.shape[1], array.shape[0]), settings, "the NumPy array")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array))
