"""The real transformers path on tiny real-architecture checkpoints (CPU): every family, every way to run."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager

import pytest
from PIL import Image

import optascan
from optascan import CancelToken, FinishReason, Request, State, VisionNotSupported
from optascan.engine.detokenize import IncrementalDetokenizer

VLM_FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl", "idefics3"]
ALL_FAMILIES = [*VLM_FAMILIES, "llama_text"]


def photo(colour=(200, 40, 40), size=(96, 64)) -> Image.Image:
    image = Image.new("RGB", size, (240, 240, 240))
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), colour), (10, 10))
    return image


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@contextmanager
def count_language_steps(engine):
    """Counts forward calls of the language model (prefill + one per decode step)."""
    calls = [0]
    handle = engine.backend.language_model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def request_for(family: str, **kw) -> Request:
    images = [photo()] if family in VLM_FAMILIES else []
    return Request(prompt="What is in the photo? café 日本", images=images, **kw)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_family_generates_through_the_public_api(tiny_engine, family):
    engine = tiny_engine(family)
    result = engine.generate(request_for(family, max_tokens=8, ignore_eos=True, seed=1))
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 8
    assert result.usage.prompt_tokens > result.usage.image_tokens
    assert (result.usage.image_tokens > 0) == (family in VLM_FAMILIES)
    assert result.timings.ttft_s > 0 and result.timings.decode_tokens_per_s > 0
    assert result.text


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_openai_messages_with_data_url_images(tiny_engine, family):
    engine = tiny_engine(family)
    result = engine.generate(messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(photo())}},
                                     {"type": "text", "text": "Describe it."}]}],
        max_tokens=4, ignore_eos=True)
    assert result.usage.image_tokens > 0 and result.usage.completion_tokens == 4


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
async def test_same_seed_same_text_on_every_path(tiny_engine, family):
    engine = tiny_engine(family)
    request = request_for(family, max_tokens=24, temperature=0.9, top_p=0.95, top_k=50, seed=1234,
                          ignore_eos=True)
    streamed = "".join(e.delta for e in engine.stream(request))
    seen: list[str] = []
    blocking = engine.generate(request, on_event=lambda e: seen.append(e.delta)).text
    async_streamed = "".join([e.delta async for e in engine.astream(request)])
    awaited = (await engine.agenerate(request)).text
    assert streamed == blocking == "".join(seen) == async_streamed == awaited
    other = engine.generate(request_for(family, max_tokens=24, temperature=0.9, seed=99, ignore_eos=True))
    assert other.text != blocking  # the seed matters


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_real_tokenizer_deltas_never_split_a_character(tiny_engine, family):
    backend = tiny_engine(family).backend
    text = "café 日本語 🙂 ok"
    ids = backend.tokenizer.encode(text, add_special_tokens=False)
    pieces = [backend.tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces), "the tokenizer should split some character over tokens"
    detok = IncrementalDetokenizer(backend.decode)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("family", ["llava", "llama_text"])
def test_stop_string_across_token_boundaries_on_a_real_model(tiny_engine, family):
    engine = tiny_engine(family)
    base = engine.generate(request_for(family, max_tokens=40, ignore_eos=True))
    text = base.text
    # a stop string that starts in one token and ends in another
    tokenizer = engine.backend.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    first = tokenizer.decode(ids[:5])
    stop = text[len(first) - 1:len(first) + 2]
    assert len(stop) == 3 and stop in text
    result = engine.generate(request_for(family, max_tokens=40, ignore_eos=True, stop=[stop]))
    assert result.finish_reason is FinishReason.STOP
    assert result.text == text[:text.index(stop)]
    assert result.usage.completion_tokens < 40


@pytest.mark.parametrize("family", ["qwen2_vl", "llama_text"])
def test_cancel_from_another_thread_stops_within_one_decode_step(tiny_engine, family):
    engine = tiny_engine(family)
    token = CancelToken()
    at_cancel: list[int] = []
    with count_language_steps(engine) as steps:
        def watch(event):
            if event.tokens == 10 and not at_cancel:
                # cancel from a thread of our own, as a UI would
                thread = threading.Thread(target=lambda: (at_cancel.append(steps[0]), token.cancel()))
                thread.start()
                thread.join()
        result = engine.generate(request_for(family, max_tokens=5000, ignore_eos=True), cancel=token,
                                 on_event=watch)
        final_steps = steps[0]
    assert result.finish_reason is FinishReason.CANCELLED
    assert final_steps - at_cancel[0] <= 1  # cancel latency: at most one more forward pass
    assert 10 <= result.usage.completion_tokens < 5000
    assert result.text


def test_cancel_before_vision_encoding_runs_no_forward_pass(tiny_engine):
    engine = tiny_engine("llava")
    token = CancelToken()
    token.cancel()
    with count_language_steps(engine) as steps:
        result = engine.generate(request_for("llava", max_tokens=10), cancel=token)
    assert result.finish_reason is FinishReason.CANCELLED and steps[0] == 0
    assert result.usage.completion_tokens == 0


def test_closing_the_iterator_cancels_the_generation(tiny_engine):
    engine = tiny_engine("llava")
    token = CancelToken()
    with count_language_steps(engine) as steps:
        stream = engine.stream(request_for("llava", max_tokens=5000, ignore_eos=True), cancel=token)
        for event in stream:
            if event.tokens >= 3:
                break
        stream.close()
        assert token.cancelled
        follow = engine.generate(request_for("llava", max_tokens=2, ignore_eos=True))  # FIFO: runs after
        assert follow.usage.completion_tokens == 2
        assert steps[0] < 100


async def test_cancelling_the_awaiting_task_cancels_the_generation(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    token = CancelToken()
    first_token = asyncio.Event()
    task = asyncio.create_task(engine.agenerate(
        request_for("qwen2_vl", max_tokens=5000, ignore_eos=True), cancel=token,
        on_event=lambda e: e.tokens and first_token.set()))
    await asyncio.wait_for(first_token.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert token.cancelled
    result = await engine.agenerate(request_for("qwen2_vl", max_tokens=2, ignore_eos=True))
    assert result.usage.completion_tokens == 2


def test_eight_threads_at_once_complete_in_fifo_order_with_correct_positions(tiny_engine):
    engine = tiny_engine("llava")
    blocker = CancelToken()
    started = threading.Event()
    log: list[tuple[str, State, int | None]] = []  # appended by the worker thread, in its order
    log_lock = threading.Lock()

    def record(event):
        with log_lock:
            log.append((event.request_id, event.state, event.queue_position))

    engine.submit(request_for("llava", max_tokens=100_000, ignore_eos=True),
                  lambda e: started.set() if e.tokens else None, blocker)
    started.wait(30)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def client(i):
        barrier.wait()
        job = engine.submit(request_for("llava", max_tokens=3, ignore_eos=True, seed=i), record)
        ids.append(job.id)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blocker.cancel()
    done = threading.Event()
    while not done.is_set():
        with log_lock:
            finals = [e for e in log if e[1].is_final]
        if len(finals) == 8:
            done.set()
        else:
            done.wait(0.05)
    first_position = {rid: next(p for r, s, p in log if r == rid) for rid in ids}
    assert sorted(first_position.values()) == list(range(8))
    start_order = [r for r, s, _ in log if s is State.PREPROCESSING]
    assert start_order == sorted(ids, key=first_position.get)  # FIFO
    for rid in ids:
        positions = [p for r, s, p in log if r == rid and s is State.QUEUED]
        assert positions == list(range(first_position[rid], -1, -1))  # moves down one at a time to 0
    assert all(s is State.DONE for _, s, _ in finals)


def test_queue_full_when_bounded(tiny_dir):
    with optascan.load(tiny_dir("llama_text"), device="cpu", max_queue=1) as engine:
        blocker = CancelToken()
        started = threading.Event()
        engine.submit(Request(prompt="x", max_tokens=100_000, ignore_eos=True),
                      lambda e: started.set() if e.tokens else None, blocker)
        started.wait(30)
        waiting = engine.stream(prompt="one waits", max_tokens=2, ignore_eos=True)
        with pytest.raises(optascan.QueueFull):
            engine.generate(prompt="two is too many", max_tokens=2)
        blocker.cancel()
        assert list(waiting)[-1].result.usage.completion_tokens == 2


def test_images_to_a_text_only_model_raise_vision_not_supported(tiny_engine):
    engine = tiny_engine("llama_text")
    with pytest.raises(VisionNotSupported) as info:
        engine.generate(prompt="what is this?", images=[photo()])
    assert info.value.recoverable
    with pytest.raises(VisionNotSupported):
        engine.stream(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(photo())}}, {"type": "text", "text": "x"}]}])
    assert engine.generate(prompt="text is fine", max_tokens=2).usage.completion_tokens >= 1


def test_bad_image_fails_the_request_with_a_typed_error_and_the_engine_keeps_serving(tiny_engine):
    engine = tiny_engine("llava")
    with pytest.raises(optascan.ImageDecodeError):
        engine.generate(prompt="x", images=[b"not an image at all"])
    with pytest.raises(optascan.ImageNotFound):
        engine.generate(prompt="x", images=["/no/such/photo.jpg"])
    assert engine.generate(request_for("llava", max_tokens=2, ignore_eos=True)).usage.completion_tokens == 2


def test_out_of_memory_becomes_a_recoverable_typed_error(tiny_dir):
    import torch

    with optascan.load(tiny_dir("llava"), device="cpu") as engine:
        faults = iter([True] * 4)  # each request tries twice: once more with a smaller image tier

        def out_of_memory_once(_module, _args):  # injected fault: four prefills run out of memory
            if next(faults, False):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                             "total capacity of 79.19 GiB of which 1.10 GiB is free.")

        engine.backend.language_model.register_forward_pre_hook(out_of_memory_once)
        events = list(engine.stream(request_for("llava", max_tokens=4)))
        final = events[-1]
        assert final.state is State.FAILED and final.result.finish_reason is FinishReason.ERROR
        error = final.result.error
        assert isinstance(error, optascan.OutOfMemory) and error.recoverable
        assert error.requested_bytes == 2 * 1024**3 and "prefill" in str(error)
        assert final.result.metadata["downscaled"][0]["to_tier"] == "battery"
        with pytest.raises(optascan.OutOfMemory):  # the blocking call raises it
            engine.generate(request_for("llava", max_tokens=4))
        again = engine.generate(request_for("llava", max_tokens=3, ignore_eos=True))  # still serving
        assert again.usage.completion_tokens == 3


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_cancel_during_preprocessing_skips_vision_encoding(tiny_engine, family, monkeypatch):
    engine = tiny_engine(family)
    token = CancelToken()
    real_prepare = engine.backend.prepare

    def prepare_then_cancel(*args):  # the cancel arrives while the processor runs
        prepared = real_prepare(*args)
        token.cancel()
        return prepared

    monkeypatch.setattr(engine.backend, "prepare", prepare_then_cancel)
    calls = [0]
    handle = engine.backend.vision_tower.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        result = engine.generate(request_for(family, max_tokens=10), cancel=token)
    finally:
        handle.remove()
    assert result.finish_reason is FinishReason.CANCELLED and calls[0] == 0
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 0


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_cancel_during_vision_encoding_skips_prefill(tiny_engine, family):
    engine = tiny_engine(family)
    engine.backend.forget_prefix()  # an earlier test's identical request would let this one skip the vision tower
    token = CancelToken()
    # registered after the engine's own hook, so it runs once the vision tower has been let through
    handle = engine.backend.vision_tower.register_forward_pre_hook(lambda *_: token.cancel())
    try:
        with count_language_steps(engine) as steps:
            result = engine.generate(request_for(family, max_tokens=10), cancel=token)
    finally:
        handle.remove()
    assert result.finish_reason is FinishReason.CANCELLED
    assert steps[0] == 0  # the language model never ran: no prefill


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_prepared_size_and_rotation_show_up_in_the_result(tiny_engine, family):
    upright = Image.new("RGB", (3000, 2000), (30, 30, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif.tobytes())
    result = engine_result = tiny_engine(family).generate(prompt="x", images=[buf.getvalue()], max_tokens=2,
                                                          image_tier="battery")
    described = engine_result.metadata["images"][0]
    assert described["original_size"] == [2000, 3000] and described["rotated"] == 90
    w, h = described["prepared_size"]
    assert w > h and max(w, h) <= 768  # upright and within the battery tier (or the processor's own cap)
    assert result.usage.image_tokens > 0


@pytest.mark.parametrize("family", VLM_FAMILIES)
@pytest.mark.parametrize("size", [(1, 1), (10000, 1)])
def test_extreme_images_work_or_fail_with_a_typed_error_and_the_engine_keeps_serving(tiny_engine, family, size):
    engine = tiny_engine(family)
    try:
        result = engine.generate(prompt="x", images=[Image.new("RGB", size, (9, 9, 9))], max_tokens=2)
        assert result.usage.image_tokens > 0
    except optascan.OptascanError as err:
        assert err.recoverable and isinstance(err, optascan.InvalidRequest | optascan.ImageError)
    assert engine.generate(request_for(family, max_tokens=2, ignore_eos=True)).usage.completion_tokens == 2


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_the_engine_estimates_image_tokens_as_the_processor_counts_them(tiny_engine, family):
    engine = tiny_engine(family)
    for size in [(640, 480), (300, 1000)]:
        result = engine.generate(prompt="x", images=[Image.new("RGB", size)], max_tokens=1)
        prepared = result.metadata["images"][0]["prepared_size"]
        assert engine.estimate_image_tokens(*prepared) == result.usage.image_tokens


def test_out_of_memory_before_the_first_token_retries_once_with_a_smaller_image_tier(tiny_dir):
    import torch

    with optascan.load(tiny_dir("qwen2_vl"), device="cpu") as engine:
        seen_pixels: list[int] = []

        def out_of_memory_on_big_images(_module, args, kwargs):
            pixels = (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).shape[0]
            seen_pixels.append(pixels)
            if len(seen_pixels) == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")

        handle = engine.backend.vision_tower.register_forward_pre_hook(out_of_memory_on_big_images, with_kwargs=True)
        try:
            result = engine.generate(prompt="x", images=[Image.new("RGB", (2000, 1500), (9, 90, 9))], max_tokens=3,
                                     ignore_eos=True, image_tier="quality")
            assert result.usage.completion_tokens == 3
            assert result.metadata["downscaled"] == [
                {"from_tier": "quality", "to_tier": "balanced", "reason": result.metadata["downscaled"][0]["reason"]}]
            assert result.metadata["images"][0]["tier"] == "balanced"
            # twice out of memory: the typed error, with the numbers, and the engine still serves
            seen_pixels.clear()
            handle.remove()
            handle = engine.backend.vision_tower.register_forward_pre_hook(
                lambda *_: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                                        "2.00 GiB.")))
            with pytest.raises(optascan.OutOfMemory) as info:
                engine.generate(prompt="x", images=[Image.new("RGB", (800, 600))], max_tokens=3)
            assert info.value.requested_bytes == 2 * 1024**3
        finally:
            handle.remove()
        assert engine.generate(prompt="x", images=[Image.new("RGB", (80, 60))], max_tokens=2,
                               ignore_eos=True).usage.completion_tokens == 2


def test_an_engine_left_open_is_closed_at_interpreter_exit(tiny_dir):
    # A daemon worker thread left running into interpreter finalization aborted the process now and then
    # ("terminate called without an active exception", exit 134). optascan's atexit hook closes live workers
    # first; a hook registered before importing optascan runs after it and sees the thread gone.
    script = textwrap.dedent(f"""
        import atexit
        atexit.register(lambda: print("worker alive at exit:", engine._worker._thread.is_alive(), flush=True))
        import optascan
        engine = optascan.load({str(tiny_dir("llama_text"))!r}, device="cpu")
        engine.generate(prompt="hi", max_tokens=2)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "worker alive at exit: False" in done.stdout
