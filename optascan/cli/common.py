"""What several commands share: the model and runtime options and the early image-path check."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import ImageNotFound

DEFAULT_MODEL = os.environ.get("OPTASCAN_MODEL", "demo")


def add_model_option(parser: Any) -> None:
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help="model directory, catalog name or cached hub repo id (default: %(default)s; "
                             "env OPTASCAN_MODEL)")


def add_runtime_options(parser: Any, *, dtype: bool = True) -> None:
    """--device, --mode, --engine (and --dtype): how a command loads and runs its model."""
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cuda, cuda:N, mps or cpu")
    parser.add_argument("--mode", choices=("saver", "balanced", "performance"), default="balanced",
                        help="performance mode: image tier, default max tokens and CPU threads (default: balanced)")
    parser.add_argument("--engine", choices=("auto", "hf", "fast"), default="auto",
                        help="hf: transformers' generate; fast: optascan's own decoder for the language model "
                             "(LLaVA, Idefics3, Qwen2-VL, Qwen2.5-VL, Llama) on CUDA; auto: fast on CUDA for those "
                             "families, else hf (default: auto)")
    if dtype:
        parser.add_argument("--dtype", default=None,
                            help="float32, bfloat16 or float16 (default: bf16 on GPU, fp32 on CPU)")


def check_image_paths(paths: Sequence[str]) -> None:
    """Fail on a mistyped path before the slow model load."""
    for path in paths:
        if not os.path.isfile(path):
            raise ImageNotFound(f"image not found: {path!r}")
