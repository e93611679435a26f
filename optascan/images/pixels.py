"""An RGB photo's pixels as a numpy array without copying them out of Pillow.

Why: ``np.asarray(photo)`` goes through Pillow's ``tobytes`` — an encoder that packs the 4-byte pixels Pillow
keeps for RGB into 3-byte ones, a join of its chunks, then numpy's own copy: ~1.5 ms of host time for a
1024×768 photo on the GPU machine, a tenth of LLaVA's time to first token there, spent before the GPU can start.
Pillow (11.2+) exports an image's memory through the Arrow C data interface (``__arrow_c_array__``) instead,
without a copy; this reads that export with ctypes (the interface is a fixed C ABI) and gives the pixels as an
[H, W, 4] uint8 view: red, green, blue and Pillow's padding byte. The view keeps the export, and so the image's
memory, alive for as long as it lives.

Anything the export does not give as one block of RGBX pixels (older Pillow, a photo too large for one block,
another mode) gives None, and the caller copies the usual way.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p), ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))), ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

PIXEL_FORMAT = (b"+w:4", b"C")  # Arrow: a fixed-size list of 4 per pixel, of uint8


class _ExportedPixels:
    """Holds the Arrow export (the capsules release it when they go) for the numpy view built on its memory."""

    def __init__(self, capsules: tuple[Any, Any], address: int, shape: tuple[int, int, int]) -> None:
        self.capsules = capsules
        self.__array_interface__ = {"shape": shape, "typestr": "|u1", "data": (address, True), "version": 3}


def rgbx_view(image: Any) -> np.ndarray | None:
    """[H, W, 4] uint8, sharing the memory of the RGB Pillow ``image`` (read-only); None where Pillow cannot
    export it as one block of 4-byte pixels."""
    if getattr(image, "mode", None) != "RGB" or not hasattr(image, "__arrow_c_array__"):
        return None
    try:
        capsules = image.__arrow_c_array__()
    except (ValueError, TypeError, NotImplementedError):  # e.g. "Image rows are not contiguous in memory"
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(capsules[0], b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(capsules[1], b"arrow_array"))
    if (schema.format, schema.n_children) != (PIXEL_FORMAT[0], 1) or schema.children[0].contents.format != \
            PIXEL_FORMAT[1] or array.n_children != 1 or array.offset != 0:
        return None
    child = array.children[0].contents
    width, height = image.size
    if child.n_buffers != 2 or child.offset != 0 or child.length != width * height * 4 or not child.buffers[1]:
        return None
    return np.asarray(_ExportedPixels(capsules, child.buffers[1], (height, width, 4)))
