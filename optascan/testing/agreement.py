"""Greedy agreement between two engines, and where they part, why (GPU checks and benchmarks of issue #9).

In bf16 two correct implementations can pick different tokens where the top two logits are within rounding of
each other: summation order differs (fused q/k/v, another attention kernel), and one step of difference changes
everything after it. ``first_divergence`` tells such a tie from a bug: it recomputes the reference model's
logits at the first differing step (one full forward over prompt + the shared tokens) and reports the gap
between the two chosen tokens' logits, in units of bf16 spacing at that size.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..engine.backends.base import Sampling
from ..engine.cancel import CancelToken
from ..engine.conversation import to_conversation
from ..images.prepare import prepare_image
from ..types import Request


def greedy_ids(engine: Any, request: dict, tokens: int) -> tuple[Any, list[int]]:
    """(the prepared prompt, ``tokens`` greedy token ids with EOS ignored) from ``engine``'s backend."""
    backend = engine.backend
    tier = request.get("image_tier") or "balanced"
    images = [prepare_image(image, tier=tier, settings=engine.image_settings, limits=backend.image_limits).image
              for image in request.get("images", [])]
    prepared = backend.prepare(to_conversation(Request(**{**request, "images": images})), images)
    ids: list[int] = []

    def on_token(token: int) -> bool:
        ids.append(token)
        return True

    with torch.inference_mode():
        backend.generate(prepared, Sampling(max_tokens=tokens, ignore_eos=True), CancelToken(), on_token)
    return prepared, ids


def with_generated(inputs: dict, tokens: list[int]) -> dict:
    """A prepared prompt's model inputs with ``tokens`` appended as generated text, for a full forward pass."""
    inputs = dict(inputs)
    prompt = inputs["input_ids"]
    added = torch.tensor([tokens], dtype=prompt.dtype, device=prompt.device).view(1, len(tokens))
    inputs["input_ids"] = torch.cat([prompt, added], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    for key in ("mm_token_type_ids", "token_type_ids"):  # generated tokens are text
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], inputs[key].new_zeros(1, len(tokens))], dim=1)
    return inputs


def first_divergence(reference_engine: Any, prepared: Any, reference: list[int], ours: list[int]) -> dict:
    """{"equal_tokens": n} where the lists agree throughout, else the first differing step explained.

    The gap between the two tokens' logits (reference's minus ours) is measured in the reference model's full
    forward pass; it is a tie when at most two bf16 spacings, or at most twice the reference's own drift there —
    how much the same gap differs in its incremental (KV-cached) logits: two computations of the same logits by
    the same model already disagree by that much on this pair, so a third may order it either way. A negative
    gap (the reference's full forward itself ranks our token higher) is a tie too."""
    step = next((i for i, (a, b) in enumerate(zip(reference, ours, strict=False)) if a != b), None)
    if step is None:
        return {"equal_tokens": min(len(reference), len(ours)), "diverged": False}
    model = reference_engine.backend.model
    inputs = with_generated(prepared.inputs, reference[:step])
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1].float()
    pair = (reference[step], ours[step])
    theirs, mine = float(logits[pair[0]]), float(logits[pair[1]])
    spacing = 2.0 ** (math.floor(math.log2(max(abs(theirs), 1e-6))) - 7)  # bf16 keeps 8 significant bits
    incremental = _incremental_logits(model, prepared.inputs, reference[:step + 1])
    gap = theirs - mine
    incremental_gap = None if incremental is None else float(incremental[pair[0]]) - float(incremental[pair[1]])
    drift = None if incremental_gap is None else abs(incremental_gap - gap)
    return {"equal_tokens": step, "diverged": True, "reference_token": pair[0], "our_token": pair[1],
            "reference_logit": theirs, "our_token_logit": mine, "gap": gap,
            "bf16_spacing": spacing, "gap_in_bf16_spacings": gap / spacing, "reference_drift": drift,
            "reference_incremental_gap": incremental_gap,
            "tie": gap <= max(2 * spacing, 2 * (drift or 0.0))}


def _incremental_logits(model: Any, inputs: dict, forced: list[int]) -> torch.Tensor | None:
    """The reference model's own logits at the last of ``forced`` tokens, decoding with its KV cache along
    the forced tokens (transformers' generate, every choice forced); None where it cannot say."""
    prompt = inputs["input_ids"].shape[1]

    def allowed(batch: int, ids: torch.Tensor) -> list[int]:
        return [forced[min(ids.shape[-1] - prompt, len(forced) - 1)]]

    try:
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=len(forced), do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, prefix_allowed_tokens_fn=allowed,
                                 pad_token_id=forced[0])
    except Exception:  # noqa: BLE001 - an explanation we could not compute, not a failure of the check
        return None
    return out.logits[len(forced) - 1][0].float() if len(out.logits) >= len(forced) else None


def against_float32(fast_engine: Any, path: str, prepared: Any, prefix: list[int], pair: tuple[int, int]) -> dict:
    """At a divergence after ``prefix``: what float32 says. The checkpoint loaded again in float32
    (transformers) gives near-exact logits; reported are the float32 gap between the pair (reference token,
    ours), and how far from float32 transformers' bf16 logits (full forward) and ours (the decode loop along
    the prefix) are over float32's top 10 tokens. Where the float32 gap is smaller than transformers' own
    bf16 error, the pair is a bf16 tie: which of the two the reference picks is decided by rounding."""
    backend = fast_engine.backend
    inputs = with_generated(prepared.inputs, prefix)
    with torch.inference_mode():
        bf16 = backend.model(**inputs).logits[0, -1].float()
        ours = fast_logits_along(backend, prepared, prefix)
        model = type(backend.model).from_pretrained(path, dtype=torch.float32).to(bf16.device).eval()
        try:
            exact = model(**{k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                             for k, v in inputs.items()}).logits[0, -1].float()
        finally:
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    top = exact.topk(min(10, exact.shape[-1])).indices
    gap = float(exact[pair[0]] - exact[pair[1]])
    theirs_error = float((bf16 - exact)[top].abs().max())
    return {"float32_gap": gap, "float32_prefers": "reference" if gap >= 0 else "ours",
            "transformers_bf16_error": theirs_error, "ours_bf16_error": float((ours - exact)[top].abs().max()),
            "bf16_tie": abs(gap) <= theirs_error}


@torch.inference_mode()
def fast_logits_along(backend: Any, prepared: Any, tokens: list[int]) -> torch.Tensor:
    """The fast backend's logits [vocab] after its prefill of the prompt and decode steps over ``tokens``."""
    logits, n, next_position = backend.prefill(prepared.inputs)
    logits = logits[:, -1].float()
    for i, token in enumerate(tokens):
        logits = backend.decode_loop.logits_after(token, n + i, next_position + i)
    return logits[0].float().clone()
