"""Turn any supported image input into an upright RGB ``PIL.Image``.

Accepted: a path (``str`` / ``os.PathLike``), ``bytes``, a binary file object, a ``PIL.Image``, a NumPy
HWC uint8 array, a base64 string or a ``data:`` URL. EXIF orientation is applied. (Issue #3 extends
this with pixel caps before decoding, remote URLs and more formats.)
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageDecodeError, ImageNotFound, InvalidRequest

_BASE64_RE = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def load_image(source: Any) -> Image.Image:
    """Decode ``source`` to an RGB image with EXIF orientation applied; typed errors on bad input."""
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source))
    if _is_numpy_array(source):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), "the given bytes")
    if hasattr(source, "read"):
        return _decode(source.read(), "the given file object")
    if isinstance(source, os.PathLike):
        return _from_path(os.fspath(source))
    if isinstance(source, str):
        return _from_string(source)
    raise InvalidRequest(f"unsupported image input of type {type(source).__name__}", field="images",
                         hint="pass a path, bytes, a PIL image, a NumPy array, base64 or a data: URL")


def _from_string(text: str) -> Image.Image:
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or ";base64" not in header:
            raise ImageDecodeError("a data: URL must be base64-encoded ('data:image/png;base64,...')")
        return _decode(_b64(payload), "the data: URL")
    if text.startswith(("http://", "https://")):
        raise InvalidRequest("image URLs are not fetched", field="images",
                             hint="download the image and pass its path or bytes")
    if text.startswith("file://"):
        raise InvalidRequest("file:// URLs are not accepted", field="images", hint="pass the plain path")
    if os.path.exists(text):
        return _from_path(text)
    if len(text) > 64 and _BASE64_RE.match(text[:4096]):
        return _decode(_b64(text), "the base64 string")
    raise ImageNotFound(f"image not found: {text!r}")


def _from_path(path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise ImageNotFound(f"image not found: {path!r}")
    with open(path, "rb") as f:
        return _decode(f.read(), path)


def _b64(payload: str) -> bytes:
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageDecodeError(f"invalid base64 image data: {err}") from err


def _decode(data: bytes, what: str) -> Image.Image:
    if not data:
        raise ImageDecodeError(f"{what} is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now, so truncated files fail here and not inside the engine
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"cannot decode {what} as an image: {err}") from err
    except Image.DecompressionBombError as err:  # pragma: no cover - covered by issue #3's limits
        raise ImageDecodeError(f"{what} is a decompression bomb: {err}") from err
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _is_numpy_array(source: Any) -> bool:
    return type(source).__module__ == "numpy" and hasattr(source, "shape")


def _from_array(array: Any) -> Image.Image:
    import numpy as np

    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InvalidRequest(f"a NumPy image must be HxW or HxWx(1|3|4) uint8, got {array.dtype} "
                             f"{tuple(array.shape)}", field="images")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))
