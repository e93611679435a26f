"""Memory a model will need, known before loading it: read from config.json and the safetensors headers.

Pure Python (no torch): the headers give every tensor's dtype and shape without reading the weights.

    weights   sum of parameters × bytes of the dtype they will be loaded in
    kv/token  2 (K and V) × layers × kv heads × head dim × dtype bytes
    vision    the vision tower's activations for one image (a rough upper bound: patches × width × 8)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
LOAD_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
RUNTIME_OVERHEAD = 0.05  # allocator fragmentation, CUDA context aside, temporary buffers


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    weights_bytes: int
    kv_bytes_per_token: int
    vision_bytes: int  # activations for one image of the given size
    context_tokens: int

    @property
    def total_bytes(self) -> int:
        working = self.kv_bytes_per_token * self.context_tokens + self.vision_bytes
        return int((self.weights_bytes + working) * (1 + RUNTIME_OVERHEAD))


def count_parameters(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes as stored) from the safetensors headers, sharded checkpoints included."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no .safetensors weights in {str(model_dir)!r}",
                             hint="optascan loads safetensors checkpoints only (no pickle)")
    params = stored = 0
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 * 1024 * 1024:
                raise ModelLoadError(f"{path.name} has an implausible header ({length:,} bytes)")
            header = json.loads(f.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            numel = 1
            for dim in tensor["shape"]:
                numel *= dim
            params += numel
            stored += numel * DTYPE_BYTES.get(tensor["dtype"], 4)
    return params, stored


def estimate(model_dir: str | Path, *, dtype: str = "bfloat16", context_tokens: int = 4096,
             image_size: tuple[int, int] | None = (1024, 768)) -> MemoryEstimate:
    """Memory to load ``model_dir`` in ``dtype`` and run one request of ``context_tokens`` with one image."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config") or config
    width = LOAD_BYTES.get(dtype, 2)
    params, _ = count_parameters(model_dir)
    kv_per_token = kv_bytes_per_token(text, width)
    return MemoryEstimate(params=params, weights_bytes=params * width, kv_bytes_per_token=kv_per_token,
                          vision_bytes=_vision_bytes(config, image_size, width), context_tokens=context_tokens)


def kv_bytes_per_token(text_config: dict, width: int) -> int:
    """K and V for one token across all layers: 2 × layers × kv heads × head dim × bytes per value."""
    heads = text_config["num_attention_heads"]
    kv_heads = text_config.get("num_key_value_heads") or heads
    head_dim = text_config.get("head_dim") or text_config["hidden_size"] // heads
    return 2 * text_config["num_hidden_layers"] * kv_heads * head_dim * width


def _vision_bytes(config: dict, image_size: tuple[int, int] | None, width: int) -> int:
    vision = config.get("vision_config")
    if not vision or image_size is None:
        return 0
    hidden = vision.get("hidden_size") or vision.get("embed_dim") or 1024
    patch = vision.get("patch_size") or 14
    fixed = vision.get("image_size")
    if isinstance(fixed, int) and fixed > 0:  # towers that always see one square (CLIP, SigLIP)
        patches = (fixed // patch) ** 2
    else:  # dynamic-resolution towers (Qwen2-VL): one patch per patch_size² pixels
        patches = max(1, (image_size[0] // patch) * (image_size[1] // patch))
    # residual stream, MLP intermediate (~4× width) and attention outputs alive at once
    return patches * hidden * 8 * width
