"""The loaded-model handle: submit requests, and four ways to consume them that share one path.

``stream`` (iterator) is the primitive; ``astream`` is the same events through asyncio; ``generate``
joins the stream (calling ``on_event`` for each event) and returns the final result; ``agenerate`` is
its awaitable twin. Leaving an iterator early, closing it, or cancelling the awaiting task cancels the
generation.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import Cancelled, InvalidRequest, VisionNotSupported
from ..images.intake import IntakeSettings
from ..types import Event, FinishReason, Request, Result
from . import modes
from .backends.base import Backend, Sampling
from .cancel import CancelToken
from .choice import choose_engine, model_type_of
from .conversation import to_conversation
from .generate import finish_unstarted, run_job
from .modes import ThermalReader, read_thermal
from .worker import Job, Worker

DEFAULT_MAX_QUEUE = 32


@dataclass(frozen=True)
class EngineInfo:
    model: str
    backend: str
    device: str
    dtype: str
    supports_images: bool
    weight_bytes: int
    engine_choice: str = ""  # which engine runs and why (auto's reasoning), e.g. "auto: transformers (...)"


class Engine:
    """One loaded model with its own worker thread. Thread-safe; use as a context manager or ``close()``."""

    def __init__(self, backend: Backend, *, name: str, max_queue: int = DEFAULT_MAX_QUEUE,
                 image_settings: IntakeSettings | None = None, mode: str = "balanced",
                 thermal_policy: str = "step_down", thermal_reader: ThermalReader = read_thermal) -> None:
        if thermal_policy not in ("step_down", "refuse", "off"):
            raise InvalidRequest("thermal_policy must be 'step_down', 'refuse' or 'off'", field="thermal_policy")
        self.backend = backend
        self.engine_choice = f"{backend.name}: as asked"  # load() records auto's reasoning here
        self.name = name
        self.image_settings = image_settings or IntakeSettings()
        self.mode = modes.mode(mode)
        self._thermal = None if thermal_policy == "off" else (
            lambda tier: modes.apply_thermal_policy(thermal_reader(backend.device), tier, thermal_policy))
        self._worker = Worker(lambda job: run_job(job, backend, name), lambda job: finish_unstarted(job, name),
                              max_queue=max_queue, name=name)

    @property
    def info(self) -> EngineInfo:
        b: Any = self.backend
        return EngineInfo(self.name, b.name, b.device, str(getattr(b, "dtype", "")).replace("torch.", ""),
                          b.supports_images, int(getattr(b, "weight_bytes", 0)), self.engine_choice)

    def estimate_image_tokens(self, width: int, height: int) -> int:
        """Image tokens this model's processor makes for a ``width``×``height`` image (as prepared), without
        running anything. Raises ModelError for a model whose processor family is not in the table."""
        from ..images.tokens import estimate_image_tokens

        config = getattr(self.backend, "image_processor_config", None)
        if not self.backend.supports_images or config is None:
            raise VisionNotSupported(f"{self.name} takes no images")
        return estimate_image_tokens(self.backend.model_type, config, width, height)

    @property
    def queue_depth(self) -> int:
        return self._worker.queue_depth

    # --- the primitive -------------------------------------------------------------------------------
    def submit(self, request: Request, sink: Callable[[Event], None], cancel: CancelToken | None = None) -> Job:
        """Validate and enqueue; events go to ``sink`` from the worker thread. Raises QueueFull at once."""
        conversation = to_conversation(request)
        if conversation.images and not self.backend.supports_images:
            raise VisionNotSupported(f"{self.name} is a text-only model and cannot take images")
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        max_tokens = request.max_tokens if request.max_tokens is not None else self.mode.max_tokens
        sampling = Sampling(max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
                            top_k=request.top_k, seed=seed, repetition_penalty=request.repetition_penalty,
                            ignore_eos=request.ignore_eos, json_schema=_schema_text(request.json_schema))
        if sampling.json_schema and not self.backend.supports_json_schema:
            raise InvalidRequest("constrained decoding (json_schema) needs a grammar library on this backend",
                                 field="json_schema", hint="pip install 'optascan[structured]' (xgrammar)")
        job = Job(id=f"gen-{uuid.uuid4().hex[:16]}", request=request, conversation=conversation,
                  sampling=sampling, cancel=cancel or CancelToken(), sink=sink, image_settings=self.image_settings,
                  image_tier=request.image_tier or self.mode.image_tier, thermal=self._thermal)
        self._worker.submit(job)
        return job

    def stream(self, request: Request | None = None, /, *, cancel: CancelToken | None = None,
               **fields: Any) -> Iterator[Event]:
        """Events for one request, ending with the final one. Closing the iterator early cancels it."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # C-level: the cheapest cross-thread hop
        job = self.submit(_request(request, fields), events.put, cancel)
        return _iterate(events, job.cancel)

    def astream(self, request: Request | None = None, /, *, cancel: CancelToken | None = None,
                **fields: Any) -> AsyncIterator[Event]:
        """The same events as ``stream``, for asyncio. Call it inside a running event loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        job = self.submit(_request(request, fields),
                          lambda event: loop.call_soon_threadsafe(events.put_nowait, event), cancel)
        return _aiterate(events, job.cancel)

    # --- joined forms --------------------------------------------------------------------------------
    def generate(self, request: Request | None = None, /, *, on_event: Callable[[Event], None] | None = None,
                 cancel: CancelToken | None = None, raise_on_cancel: bool = False, **fields: Any) -> Result:
        """Run to the end and return the result. ``on_event`` sees every event, in the caller's thread.

        A failed request raises its typed error; a cancelled one returns its partial result (or raises
        ``Cancelled`` carrying it, with ``raise_on_cancel=True``).
        """
        final: Event | None = None
        for event in self.stream(request, cancel=cancel, **fields):
            if on_event is not None:
                on_event(event)
            final = event
        assert final is not None and final.result is not None
        return _outcome(final.result, raise_on_cancel)

    async def agenerate(self, request: Request | None = None, /, *,
                        on_event: Callable[[Event], None] | None = None, cancel: CancelToken | None = None,
                        raise_on_cancel: bool = False, **fields: Any) -> Result:
        final: Event | None = None
        async for event in self.astream(request, cancel=cancel, **fields):
            if on_event is not None:
                on_event(event)
            final = event
        assert final is not None and final.result is not None
        return _outcome(final.result, raise_on_cancel)

    # --- lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel queued and running requests, stop the worker, release the model."""
        self._worker.close()
        self.backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _schema_text(schema: Any) -> str | None:
    # key order kept: the grammar generates properties in the schema's order ("understanding" before "questions")
    return json.dumps(schema) if schema else None


def _request(request: Request | None, fields: dict[str, Any]) -> Request:
    if request is None:
        return Request(**fields)
    if fields:
        raise InvalidRequest(f"give a Request or fields, not both (got {', '.join(sorted(fields))})")
    if not isinstance(request, Request):
        raise InvalidRequest(f"expected an optascan.Request, got {type(request).__name__}")
    return request


def _iterate(events: queue.SimpleQueue[Event], cancel: CancelToken) -> Iterator[Event]:
    finished = False
    try:
        while True:
            event = events.get()
            yield event
            if event.is_final:
                finished = True
                return
    finally:
        if not finished:  # the consumer left early (break, close(), garbage collection)
            cancel.cancel("the event stream was closed")


async def _aiterate(events: asyncio.Queue[Event], cancel: CancelToken) -> AsyncIterator[Event]:
    finished = False
    try:
        while True:
            event = await events.get()
            yield event
            if event.is_final:
                finished = True
                return
    finally:  # also on CancelledError (task cancelled) and GeneratorExit (aclose)
        if not finished:
            cancel.cancel("the awaiting task was cancelled or the stream closed")


def _outcome(result: Result, raise_on_cancel: bool) -> Result:
    if result.error is not None:
        raise result.error
    if raise_on_cancel and result.finish_reason is FinishReason.CANCELLED:
        raise Cancelled(result=result)
    return result


def load(model: str | os.PathLike, *, device: str = "auto", dtype: str | None = None,
         max_queue: int = DEFAULT_MAX_QUEUE, image_settings: IntakeSettings | None = None,
         memory_fraction: float = 0.9, mode: str = "balanced", thermal_policy: str = "step_down",
         engine: str = "auto") -> Engine:
    """Load a model (a local directory, a catalog name, or a cached hub repo id) on its own worker.

    ``device``: "auto" (CUDA > MPS > CPU), "cuda", "cuda:N", "mps" or "cpu". ``dtype``: bfloat16 on
    accelerators and float32 on CPU unless set. ``image_settings``: byte and pixel caps, and whether
    http(s) image URLs are fetched (off by default). Before anything is loaded, the weights (from the
    safetensors headers) must fit ``memory_fraction`` of the device's free memory, else ``ModelTooLarge``.
    ``mode``: "saver", "balanced" or "performance" (default image tier; CPU threads). ``thermal_policy``:
    on a GPU at its slowdown temperature, "step_down" to saver-sized images, "refuse" (ThermalThrottled), "off".
    ``engine``: "hf" (transformers' generate), "fast" (our compact decoder for the language model: LLaVA,
    Idefics3, Qwen2-VL, Qwen2.5-VL, Llama), or "auto": the fast engine on CUDA for those families, transformers
    otherwise (``engine/choice.py``). ``engine.info.backend`` says which one runs and ``engine.info.engine_choice``
    why.
    """
    from ..models.estimate import estimate
    from ..models.resolve import resolve_model
    from .backends import torch_device
    from .backends.hf import HFBackend  # torch is imported only when a model is loaded
    from .memory import check_fits

    chosen_mode = modes.mode(mode)
    path = resolve_model(model)
    resolved = torch_device.choose_device(device)
    if resolved == "cpu":
        torch_device.set_cpu_threads(chosen_mode.cpu_threads)
    load_dtype = str(torch_device.choose_dtype(resolved, dtype)).replace("torch.", "")
    needed = estimate(path, dtype=load_dtype, context_tokens=0, image_size=None).total_bytes
    check_fits(needed, torch_device.free_bytes(resolved), memory_fraction, f"{os.fspath(model)!r}", resolved)
    chosen, reason = choose_engine(engine, resolved, model_type_of(path))
    if chosen == "fast":
        from .backends.fast.backend import FastBackend

        backend = FastBackend(path, device=resolved, dtype=dtype, memory_fraction=memory_fraction)
    else:
        backend = HFBackend(path, device=resolved, dtype=dtype, memory_fraction=memory_fraction)
    loaded = Engine(backend, name=os.fspath(model), max_queue=max_queue, image_settings=image_settings, mode=mode,
                    thermal_policy=thermal_policy)
    loaded.engine_choice = reason
    return loaded
