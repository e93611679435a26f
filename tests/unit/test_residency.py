"""Which models stay loaded: LRU by bytes and keep-alive, with an injected clock and scripted engines."""

import time

import pytest

from optascan import Engine, ModelTooLarge
from optascan.engine.residency import ModelPool
from optascan.testing.scripted import ScriptedBackend, byte_tokens

SIZES = {"a": 400, "b": 300, "c": 500, "huge": 5000}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_pool(**kw):
    loads, closed = [], []

    def load(name):
        ids, decode = byte_tokens("ok")
        backend = ScriptedBackend(ids, decode)
        backend.weight_bytes = SIZES[name]
        backend.close = lambda: closed.append(name)
        loads.append(name)
        return Engine(backend, name=name)

    clock = Clock()
    return ModelPool(load, clock=clock, **kw), clock, loads, closed


def test_loading_evicts_least_recently_used_idle_models_until_it_fits():
    pool, clock, loads, closed = make_pool(budget_bytes=1000)
    for name in ("a", "b"):
        clock.now += 1
        pool.release(pool.get(name))
    clock.now += 1
    pool.release(pool.get("a"))  # a is now the most recently used
    clock.now += 1
    pool.release(pool.get("c"))  # 400 + 300 + 500 > 1000: b (least recent) goes
    assert closed == ["b"] and [m["name"] for m in pool.loaded()] == ["a", "c"] and pool.used_bytes == 900
    assert pool.get("a") is pool.get("a") and loads.count("a") == 1  # no reload while resident


def test_a_busy_model_is_never_evicted_and_a_too_big_one_is_refused():
    pool, clock, loads, closed = make_pool(budget_bytes=1000)
    busy = pool.get("a")  # held by a request
    with pytest.raises(ModelTooLarge) as info:
        pool.get("huge")
    assert info.value.available_bytes == 600 and "huge" in closed  # the refused load is released again
    pool.get("b")
    pool.release(busy)
    assert [m["name"] for m in pool.loaded()] == ["a", "b"]


def test_keep_alive_default_override_and_zero():
    pool, clock, loads, closed = make_pool(keep_alive_s=300)
    pool.release(pool.get("a"))
    pool.release(pool.get("b"), keep_alive_s=10)
    clock.now = 9
    assert pool.sweep() == []
    clock.now = 10
    assert pool.sweep() == ["b"]
    clock.now = 299
    assert pool.sweep() == []
    idle = {m["name"]: m["idle_s"] for m in pool.loaded()}
    assert idle == {"a": 299}
    clock.now = 300
    assert pool.sweep() == ["a"] and pool.loaded() == []
    pool.release(pool.get("c"), keep_alive_s=0)  # 0: unloaded as soon as the request is done
    assert closed[-1] == "c" and pool.loaded() == []


def test_explicit_unload_and_close():
    pool, clock, loads, closed = make_pool()
    pool.get("a")
    assert pool.unload("a") and not pool.unload("a") and closed == ["a"]
    pool.get("b")
    pool.get("c")
    pool.close()
    assert sorted(closed) == ["a", "b", "c"] and pool.loaded() == []


def test_the_sweeper_unloads_idle_models_without_any_traffic():
    pool, clock, _, closed = make_pool(keep_alive_s=300)
    pool.release(pool.get("a"))
    pool.start_sweeper(interval_s=0.01)
    clock.now = 299.0
    time.sleep(0.1)  # several sweeps, none due yet
    assert closed == []
    clock.now = 301.0
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["a"] and pool.loaded() == []
    pool.close()
    assert not pool._sweeper.is_alive()


def test_a_slow_load_does_not_block_status_release_or_other_models():
    import threading

    pool, clock, loads, closed = make_pool()
    pool.get("b")
    gate = threading.Event()
    real_load = pool._load

    def slow_load(name):
        if name == "a":
            gate.wait(10)
        return real_load(name)

    pool._load = slow_load
    loader = threading.Thread(target=pool.get, args=("a",))
    loader.start()
    time.sleep(0.05)  # the load of "a" is now in progress
    done = threading.Event()

    def status_calls():
        pool.loaded(), pool.queue_depth, pool.used_bytes
        pool.release(pool.get("b"))  # a resident model is served while another loads
        done.set()

    threading.Thread(target=status_calls).start()
    assert done.wait(2), "status and a resident model's get/release waited for another model's load"
    gate.set()
    loader.join(5)
    assert {m["name"] for m in pool.loaded()} == {"a", "b"}
