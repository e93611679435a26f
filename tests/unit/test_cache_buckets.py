"""The fast engine's attention buckets (pure logic, no GPU)."""

import pytest

torch = pytest.importorskip("torch")

from optascan.engine.backends.fast.graphs import cache_buckets  # noqa: E402


def test_buckets_double_from_256_and_end_at_the_cache_size():
    assert cache_buckets(8192) == [256, 512, 1024, 2048, 4096, 8192]
    assert cache_buckets(3000) == [256, 512, 1024, 2048, 3000]
    assert cache_buckets(100) == [100]
