"""What several commands share: the model option and the early image-path check."""

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


def check_image_paths(paths: Sequence[str]) -> None:
    """Fail on a mistyped path before the slow model load."""
    for path in paths:
        if not os.path.isfile(path):
            raise ImageNotFound(f"image not found: {path!r}")
