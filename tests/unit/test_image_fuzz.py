"""Random and mutated bytes through the intake: only errors of the project's tree may come out."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from optascan.errors import OptascanError
from optascan.images.prepare import prepare_image


def _seed(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((48, 32), 50).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


SEEDS = [_seed(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]


def _outcome(data: bytes) -> None:
    try:
        prepared = prepare_image(data)
    except OptascanError:
        return
    assert prepared.image.mode == "RGB" and min(prepared.size) >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_escape_the_error_tree(data):
    _outcome(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
       st.integers(0, 10**6))
def test_mutated_images_never_escape_the_error_tree(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    _outcome(bytes(data[: max(1, cut % (len(data) + 1))]))
