"""Torch device facts shared by the torch backends: which device, which dtype, free memory, trimming."""

from __future__ import annotations

import gc
import os
import warnings
from typing import Any

# Requests vary in image size, so activation sizes vary from one request to the next: expandable segments let
# the CUDA caching allocator grow and shrink segments instead of fragmenting into fixed blocks (PyTorch's own
# advice for varying shapes). A user's PYTORCH_CUDA_ALLOC_CONF wins. It must be set before CUDA initialises,
# hence here, before torch is imported by the backends. (Chosen from the documentation; not yet measured here.)
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ...errors import InvalidRequest
from ...images.pixels import rgbx_view
from ..memory import should_trim, system_available_bytes


def choose_device(requested: str = "auto") -> str:
    """CUDA > MPS > CPU for "auto"; an explicit "cuda", "cuda:1", "mps" or "cpu" is checked."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if _mps_available():
            return "mps"
        return "cpu"
    kind = requested.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidRequest("device 'cuda' was asked for but no CUDA device is available", field="device",
                             hint="use device='auto' or 'cpu'")
    if kind == "mps" and not _mps_available():
        raise InvalidRequest("device 'mps' was asked for but MPS is not available", field="device",
                             hint="use device='auto' or 'cpu'")
    if kind not in ("cuda", "mps", "cpu"):
        raise InvalidRequest(f"unknown device {requested!r}", field="device", hint="use auto, cuda, mps or cpu")
    return "cuda:0" if requested == "cuda" else requested


def choose_dtype(device: str, requested: str | None = None) -> torch.dtype:
    """bf16 on accelerators, fp32 on CPU, unless set ("float32", "bfloat16", "float16")."""
    if requested:
        try:
            dtype = getattr(torch, requested.replace("fp", "float").replace("bf16", "bfloat16"))
        except AttributeError as err:
            raise InvalidRequest(f"unknown dtype {requested!r}", field="dtype",
                                 hint="use float32, bfloat16 or float16") from err
        if isinstance(dtype, torch.dtype):
            return dtype
        raise InvalidRequest(f"unknown dtype {requested!r}", field="dtype")
    return torch.float32 if device == "cpu" else torch.bfloat16


def free_bytes(device: str) -> int | None:
    """What the device can still give: CUDA free memory, MPS's recommended maximum left, or system RAM."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    if device == "mps":
        return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return system_available_bytes()


def trim_cache(device: str, limit_bytes: int) -> bool:
    """Return cached-but-free allocator memory above ``limit_bytes`` to the device; True if it did."""
    if device.startswith("cuda"):
        dev = torch.device(device)
        if should_trim(torch.cuda.memory_reserved(dev), torch.cuda.memory_allocated(dev), limit_bytes):
            torch.cuda.empty_cache()
            return True
    elif device == "mps":
        if should_trim(torch.mps.driver_allocated_memory(), torch.mps.current_allocated_memory(), limit_bytes):
            torch.mps.empty_cache()
            return True
    return False


def release_after_oom(device: str) -> None:
    """Drop what the failed step left behind so the next request starts clean."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def pixels_on(device: str, image: Any) -> Any:
    """An RGB photo as a [3, H, W] uint8 tensor on ``device``, for an image processor that works there: it then
    resizes what is already on the GPU and skips its own CPU copies (Pillow's RGB copy, the HWC → CHW transpose, a
    strided copy of the whole photo). The same pixels as it would take from the photo itself. Anything else as it
    is (the processor converts other modes its own way)."""
    if not isinstance(image, Image.Image) or image.mode != "RGB":
        return image
    view = rgbx_view(image)  # Pillow's own memory, no host copy (images/pixels.py: ~1.5 ms less per photo)
    if view is None:
        return torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)
    with warnings.catch_warnings():  # read-only on purpose: the copy below is the only use
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        host = torch.from_numpy(view)
    return host.to(device, copy=True)[..., :3].permute(2, 0, 1)  # RGBX uploaded whole, the padding dropped there


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def set_cpu_threads(threads: int) -> None:
    """Process-wide, as torch allows: the performance mode's CPU thread count."""
    torch.set_num_threads(max(1, threads))
