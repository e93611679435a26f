from optascan.engine.memory import GiB, MiB, cache_limit_bytes, looks_like_oom, out_of_memory, should_trim
from optascan.engine.progress import RequestClock


def test_cache_limit_matches_the_original_app_at_both_ends():
    assert cache_limit_bytes(1 * GiB) == 20 * MiB  # small models keep 20 MiB
    assert 95 * MiB <= cache_limit_bytes(22 * GiB) <= 115 * MiB  # 11B bf16 keeps ~100 MB
    assert cache_limit_bytes(10_000 * GiB) == 512 * MiB


def test_trim_only_above_the_limit():
    assert should_trim(reserved_bytes=200, allocated_bytes=100, limit_bytes=50)
    assert not should_trim(reserved_bytes=140, allocated_bytes=100, limit_bytes=50)


def test_cuda_oom_message_becomes_numbers():
    msg = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
           "1.50 GiB is free.")
    assert looks_like_oom(msg)
    err = out_of_memory(msg, device="cuda:0", free_bytes=3 * MiB, stage="prefill")
    assert err.requested_bytes == 2 * GiB and err.free_bytes == 3 * MiB and err.recoverable
    assert "prefill" in str(err) and "2,048 MiB" in str(err)


def test_cpu_and_mps_oom_messages_are_recognised():
    assert out_of_memory("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1048576 bytes.",
                         device="cpu", free_bytes=None, stage="decode").requested_bytes == MiB
    mps = "MPS backend out of memory (MPS allocated: 1 GB). Tried to allocate 256.00 MB on private pool."
    assert looks_like_oom(mps)
    assert out_of_memory(mps, device="mps", free_bytes=None, stage="x").requested_bytes == 256 * 1000**2
    assert not looks_like_oom("shape mismatch")


def test_clock_reports_decode_speed_eta_and_timings():
    now = [100.0]
    clock = RequestClock(lambda: now[0])
    now[0] = 100.5
    clock.start()
    now[0] = 100.7
    clock.preprocess_done()
    for t in (101.0, 101.1, 101.2, 101.3, 101.4):
        now[0] = t
        clock.token()
    assert abs(clock.tokens_per_s(5) - 10.0) < 1e-9
    assert abs(clock.eta_s(5, 25) - 2.0) < 1e-9
    now[0] = 102.0
    t = clock.timings(5)
    assert (round(t.queue_s, 6), round(t.preprocess_s, 6), round(t.ttft_s, 6), round(t.total_s, 6)) == (
        0.5, 0.2, 1.0, 2.0)
    assert abs(t.decode_tokens_per_s - 10.0) < 1e-9


def test_no_speed_before_two_tokens():
    clock = RequestClock()
    clock.token()
    assert clock.tokens_per_s(1) is None and clock.eta_s(1, 10) is None
