"""The engine's queue, events and cancellation, over the scripted backend (fast, exact step counts)."""

import asyncio
import threading

import pytest

from optascan import CancelToken, Engine, FinishReason, QueueFull, Request, State
from optascan.engine.engine import Engine as _Engine  # noqa: F401 - same class, imported for clarity
from optascan.testing.scripted import ScriptedBackend, byte_tokens

EOS = 256


def make_engine(text="Hello world, café 日本語 🙂!", *, max_queue=32, step=None, eos=True):
    ids, decode = byte_tokens(text)
    backend = ScriptedBackend(ids + ([EOS] if eos else []), decode, eos_token_ids=[EOS], step=step)
    return Engine(backend, name="scripted", max_queue=max_queue), backend


def test_stream_events_go_through_every_state_and_end_with_usage():
    engine, _ = make_engine()
    with engine:
        events = list(engine.stream(prompt="hi", max_tokens=100))
    states = [e.state for e in events]
    assert states[:3] == [State.QUEUED, State.PREPROCESSING, State.PREFILL]
    assert set(states[3:-1]) == {State.GENERATING} and states[-1] is State.DONE
    result = events[-1].result
    assert result.text == "Hello world, café 日本語 🙂!" == "".join(e.delta for e in events)
    assert result.finish_reason is FinishReason.STOP  # the EOS token
    assert result.usage.completion_tokens == len("Hello world, café 日本語 🙂!".encode()) + 1
    assert all(e.tokens <= e.max_tokens for e in events)
    assert [e.tokens for e in events[3:-1]] == sorted(e.tokens for e in events[3:-1])


def test_max_tokens_gives_length():
    engine, _ = make_engine()
    with engine:
        result = engine.generate(prompt="hi", max_tokens=5)
    assert (result.text, result.finish_reason) == ("Hello", FinishReason.LENGTH)


def test_stop_string_split_over_many_tokens_ends_with_stop_and_hides_it():
    engine, backend = make_engine("The answer is 42.<END>ignored text")
    with engine:
        result = engine.generate(prompt="hi", stop=["<END>"], max_tokens=100)
    assert result.text == "The answer is 42."
    assert result.finish_reason is FinishReason.STOP
    assert backend.steps_run == len("The answer is 42.<END>")  # no step after the stop string completed


def test_cancel_from_another_thread_stops_within_one_step():
    gate_at, proceed, cancelled_at = threading.Event(), threading.Event(), []
    token = CancelToken()

    def step(index):
        if index == 10:
            gate_at.set()
            proceed.wait(5)

    engine, backend = make_engine("x" * 1000, step=step)

    def canceller():
        gate_at.wait(5)
        cancelled_at.append(backend.steps_run)
        token.cancel()
        proceed.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    with engine:
        result = engine.generate(prompt="hi", max_tokens=1000, cancel=token)
    thread.join()
    assert result.finish_reason is FinishReason.CANCELLED
    assert backend.steps_run - cancelled_at[0] <= 1  # the cancel latency in steps
    assert result.text == "x" * result.usage.completion_tokens  # the partial text is kept


def test_queued_jobs_run_in_fifo_order_with_moving_positions():
    release = threading.Event()
    engine, backend = make_engine("ab", step=lambda i: release.wait(5))
    with engine:
        first = engine.stream(prompt="first")
        assert next(first).queue_position == 0
        assert next(first).state is State.PREPROCESSING  # the worker has taken it
        streams = [engine.stream(prompt=f"p{i}") for i in range(4)]
        initial = [next(s) for s in streams]
        release.set()
        positions = [[e.queue_position for e in s if e.state is State.QUEUED] for s in streams]
        list(first)
    assert [e.queue_position for e in initial] == [0, 1, 2, 3]
    # each job's position moves down by one as the queue drains: 0→(start), 1→0, 2→1→0, ...
    assert positions == [[], [0], [1, 0], [2, 1, 0]]
    assert [c.messages[0]["content"][-1]["text"] for c in backend.prepared] == ["first", "p0", "p1", "p2", "p3"]


def test_bounded_queue_rejects_with_queue_full_and_keeps_serving():
    release = threading.Event()
    engine, _ = make_engine("ab", max_queue=2, step=lambda i: release.wait(5))
    with engine:
        running = engine.stream(prompt="running")
        next(running), next(running)  # queued, then preprocessing: the worker has taken it
        waiting = [engine.stream(prompt="w1"), engine.stream(prompt="w2")]
        with pytest.raises(QueueFull) as info:
            engine.stream(prompt="one too many")
        assert info.value.recoverable and info.value.max_queue == 2
        release.set()
        assert all(list(s)[-1].result.text == "ab" for s in [running, *waiting])
        assert engine.generate(prompt="after").text == "ab"


def test_cancelling_a_waiting_job_removes_it_from_the_queue_at_once():
    release = threading.Event()
    engine, backend = make_engine("ab", step=lambda i: release.wait(5))
    with engine:
        running = engine.stream(prompt="running")
        next(running), next(running)
        token = CancelToken()
        waiting = engine.stream(prompt="waiting", cancel=token)
        behind = engine.stream(prompt="behind")
        next(waiting), next(behind)
        token.cancel()
        events = list(waiting)  # ends without the running job finishing
        assert events[-1].result.finish_reason is FinishReason.CANCELLED
        assert next(behind).queue_position == 0  # moved up
        release.set()
        list(running), list(behind)
    assert [c.messages[0]["content"][-1]["text"] for c in backend.prepared] == ["running", "behind"]


def test_leaving_the_iterator_early_cancels_the_generation():
    engine, backend = make_engine("y" * 10_000)
    token = CancelToken()
    with engine:
        for event in engine.stream(prompt="hi", max_tokens=10_000, cancel=token):
            if event.tokens >= 3:
                break
        assert token.cancelled
        assert engine.generate(prompt="next", max_tokens=2).text == "yy"  # the worker is free again
    assert backend.steps_run < 10_000


async def test_cancelling_the_awaiting_task_cancels_the_generation():
    started = threading.Event()
    engine, backend = make_engine("z" * 100_000, step=lambda i: started.set())
    token = CancelToken()
    with engine:
        task = asyncio.create_task(engine.agenerate(prompt="hi", max_tokens=100_000, cancel=token))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert token.cancelled
        result = await engine.agenerate(prompt="next", max_tokens=3)
    assert result.text == "zzz"
    assert backend.steps_run < 100_000


async def test_every_path_gives_the_same_text():
    engine, _ = make_engine()
    with engine:
        request = Request(prompt="hi", max_tokens=30, seed=7)
        streamed = "".join(e.delta for e in engine.stream(request))
        seen = []
        blocking = engine.generate(request, on_event=lambda e: seen.append(e.delta)).text
        async_text = "".join([e.delta async for e in engine.astream(request)])
        awaited = (await engine.agenerate(request)).text
    assert streamed == blocking == "".join(seen) == async_text == awaited


def test_requests_fail_alone_and_the_engine_keeps_serving():
    def step(index):
        if index == 2:
            raise RuntimeError("boom")

    engine, _ = make_engine(step=step)
    with engine:
        from optascan import GenerationFailed

        with pytest.raises(GenerationFailed) as info:
            engine.generate(prompt="hi")
        assert "boom" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)
        events = list(engine.stream(prompt="again", max_tokens=10))
        assert events[-1].state is State.FAILED and events[-1].result.text == "He"


def test_a_request_that_would_not_fit_steps_its_images_down_then_fails_with_what_would_fit():
    from PIL import Image

    from optascan import OutOfMemory, RequestTooLarge

    engine, backend = make_engine("ok")
    backend.kv_bytes_per_token = 1000
    photo = Image.new("RGB", (3000, 2000))  # quality tier: 2048×1365 → 682 image tokens; battery: ~98
    with engine:
        backend.budget_bytes = 1000 * (3 + 300 + 10)  # room for 313 tokens: balanced (256) fits, quality does not
        result = engine.generate(prompt="x", images=[photo], max_tokens=10, image_tier="quality")
        assert [s["to_tier"] for s in result.metadata["downscaled"]] == ["balanced"]
        assert result.usage.image_tokens <= 300 and result.text == "ok"
        backend.budget_bytes = 1000 * 50  # nothing with this image fits, even at the battery tier
        with pytest.raises(RequestTooLarge) as info:
            engine.generate(prompt="x", images=[photo], max_tokens=10, image_tier="quality")
        assert "enough for 50 tokens" in str(info.value) and info.value.recoverable
        assert isinstance(info.value, OutOfMemory) and info.value.to_dict()["type"] == "RequestTooLarge"
        assert engine.generate(prompt="x", max_tokens=5).text == "ok"  # text only still fits; still serving


def test_json_schema_is_validated_and_refused_where_the_backend_cannot_constrain():
    from optascan import InvalidRequest

    for bad in ({}, "not a schema", {"type": object}):
        with pytest.raises(InvalidRequest) as info:
            Request(prompt="x", json_schema=bad)
        assert info.value.field == "json_schema"
    engine, _ = make_engine()
    with engine, pytest.raises(InvalidRequest, match="grammar") as info:
        engine.generate(prompt="x", json_schema={"type": "object"})
    assert "optascan[structured]" in info.value.hint
