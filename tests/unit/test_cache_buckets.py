"""The fast engine's attention buckets (pure logic, no GPU)."""

import pytest

torch = pytest.importorskip("torch")

from optascan.engine.backends.fast.graphs import cache_buckets  # noqa: E402


def test_buckets_double_from_256_and_end_at_the_cache_size():
    assert cache_buckets(8192) == [256, 512, 1024, 2048, 4096, 8192]
    assert cache_buckets(3000) == [256, 512, 1024, 2048, 3000]
    assert cache_buckets(100) == [100]


def test_prefill_graph_buckets_step_by_128_up_to_1024_then_by_256_up_to_2048_tokens():
    from optascan.engine.backends.fast.prefill import prefill_buckets

    assert prefill_buckets(8192) == [128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048]
    assert prefill_buckets(1000) == [128, 256, 384, 512, 640, 768, 896]  # longer prompts of a 1,000-slot cache:
    assert prefill_buckets(100) == []                                     # no graph


def test_intervals_are_the_gaps_between_marks():
    from optascan.engine.backends.fast.graphs import intervals

    assert intervals(("a", "b"), [1.0, 1.5, 4.0]) == {"a": 0.5, "b": 2.5}
    with pytest.raises(ValueError):
        intervals(("a", "b"), [1.0, 2.0])  # a missing mark is a bug, not a shorter report
