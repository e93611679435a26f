"""Which engine runs a model: what ``engine="auto"`` picks, and why (pure logic: no torch).

The fast engine (our compact decoder, CUDA graphs) supports the language models of these families. ``auto`` picks
it on CUDA, where its GPU checks passed (issue #9: greedy agreement with transformers, warm-up ≤ 15 s), and
transformers everywhere else, saying why; the switch is this module's one constant, not a hunt through the code.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InvalidRequest

ENGINES = ("auto", "hf", "fast")
FAST_FAMILIES = frozenset({"llava", "idefics3", "qwen2_vl", "qwen2_5_vl", "llama"})
# switched on when tests/gpu/check_fast.py passed on the GPU (tests/gpu/results/fast_checks-h200-2026-11-25.json)
AUTO_PICKS_FAST_ON_CUDA = True


def choose_engine(requested: str, device: str, model_type: str | None) -> tuple[str, str]:
    """(engine, reason) for a model of ``model_type`` on ``device`` ("cuda:0", "cpu", ...)."""
    if requested not in ENGINES:
        raise InvalidRequest(f"engine must be 'auto', 'hf' or 'fast', got {requested!r}", field="engine")
    if requested != "auto":
        return requested, f"{requested}: as asked"
    if not device.startswith("cuda"):
        return "hf", f"auto: transformers (the fast engine is for CUDA; this model runs on {device})"
    if model_type not in FAST_FAMILIES:
        return "hf", f"auto: transformers (the fast engine does not support {model_type or 'this'} models)"
    if not AUTO_PICKS_FAST_ON_CUDA:
        return "hf", "auto: transformers (the fast engine is not the default yet: its GPU checks are pending)"
    return "fast", "auto: the fast engine (CUDA, a supported model family)"


def model_type_of(path: Path) -> str | None:
    """The checkpoint's ``model_type`` from its config.json (None if it has none)."""
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None
