"""Which part of a new prompt a backend may take from the KV cache its previous request left behind.

A follow-up turn ("now answer my questions") repeats the whole conversation, image included. When the
cache still holds the previous request's tokens, the shared leading tokens need no vision encoding and no
prefill: only the new tail runs through the model. Pure logic, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence


def reusable_length(kept: Sequence[int], new: Sequence[int], image_token_id: int | None) -> int:
    """How many leading tokens of ``new`` to take from a cache that holds ``kept``; 0 for none.

    The common prefix, less at least one token (generation needs one new input token). Zero unless every
    image token, of ``new`` and of ``kept``, lies inside it: then the cached image features are exactly the
    ones the new prompt needs, the pixels need not be encoded again, and position schemes that depend on
    where images sit (Qwen2-VL's M-RoPE offsets, computed at the cached request's prefill) still hold.
    """
    limit = min(len(kept), len(new) - 1)
    n = 0
    while n < limit and kept[n] == new[n]:
        n += 1
    if n and image_token_id is not None and (image_token_id in new[n:] or image_token_id in kept[n:]):
        return 0
    return n
