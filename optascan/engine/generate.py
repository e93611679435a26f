"""The spine: the whole trip of one request, on the worker thread, one call per stage.

    check cancel → decode images → chat template + processor → check cancel
      → backend.generate (vision encoding, prefill, decode; cancel checked before each)
        → per token: detokenize → stop strings → progress event
      → final event (done / cancelled / failed) with usage and timings → trim memory
    A request whose KV cache would not fit steps its images down a tier at a time; a real out-of-memory before
    the first token trims the cache and goes round once more with one tier smaller.
"""

from __future__ import annotations

from ..errors import GenerationFailed, InvalidRequest, OptascanError, OutOfMemory, RequestTooLarge
from ..images.prepare import PreparedImage, prepare_image
from ..types import IMAGE_TIERS, Event, FinishReason, Result, State, Usage
from .backends.base import Backend, Prepared
from .cancel import CancelledRun, check
from .detokenize import IncrementalDetokenizer
from .memory import human_bytes
from .stops import StopMatcher
from .worker import Job

_FINAL_STATE = {FinishReason.STOP: State.DONE, FinishReason.LENGTH: State.DONE,
                FinishReason.CANCELLED: State.CANCELLED, FinishReason.ERROR: State.FAILED}


def run_job(job: Job, backend: Backend, model_name: str) -> None:
    """Run one job to its final event. Never raises: every outcome becomes the final event."""
    job.clock.start()
    run = _Run(job, backend, model_name)
    tier = job.image_tier
    try:
        if job.thermal is not None:  # before any work: refuses (policy "refuse") or picks a cooler tier
            cooler = job.thermal(tier)
            if cooler != tier and job.conversation.images:
                run.metadata["thermal_step_down"] = {"from_tier": tier, "to_tier": cooler}
                tier = cooler
        while True:
            try:
                _attempt(run, job, backend, tier)
                break
            except Exception as err:  # noqa: BLE001 - translated below; cancels and our own errors pass
                error = _as_optascan_error(err, backend)
                smaller = _smaller_tier(tier)
                steps = run.metadata.get("downscaled", [])
                # A request that does not fit steps down a tier at a time; a real OOM gets one retry.
                may_retry = isinstance(error, RequestTooLarge) or (isinstance(error, OutOfMemory) and not steps)
                if not (may_retry and run.tokens == 0 and run.images and smaller):
                    if error is err:
                        raise
                    raise error from err
                backend.after_request()  # free the cache before going round again with smaller images
                run.metadata["downscaled"] = [*steps, {"from_tier": tier, "to_tier": smaller, "reason": str(error)}]
                tier = smaller
        run.finish(FinishReason.CANCELLED if job.cancel.cancelled and run.reason is None
                   else run.reason or FinishReason.LENGTH)
    except CancelledRun:
        run.finish(FinishReason.CANCELLED)
    except OptascanError as err:
        run.finish(FinishReason.ERROR, err)
    finally:
        backend.after_request()


def _attempt(run: _Run, job: Job, backend: Backend, tier: str) -> None:
    check(job.cancel)  # before image preprocessing
    run.enter(State.PREPROCESSING)
    run.images = [prepare_image(source, tier=tier, settings=job.image_settings, limits=backend.image_limits)
                  for source in job.conversation.images]
    run.prepared(backend.prepare(job.conversation, [image.image for image in run.images]))
    _fit_context(run, backend)
    _check_fits(run.inputs, run.max_tokens, backend)
    check(job.cancel)  # before vision encoding and prefill (the backend checks again inside)
    run.enter(State.PREFILL)
    backend.generate(run.inputs, job.sampling, job.cancel, run.on_token)


def _fit_context(run: _Run, backend: Backend) -> None:
    """A prompt longer than the model's context is refused; a reply that would overrun it is capped (reported)."""
    limit = backend.context_length
    prompt = run.inputs.prompt_tokens if run.inputs else 0
    if not limit:
        return
    if prompt >= limit:
        raise InvalidRequest(
            f"the prompt is {prompt} tokens ({run.inputs.image_tokens} of them image tokens); the model's context "
            f"holds {limit}", field="messages",
            hint="shorten the conversation, send fewer or smaller images (image_tier='saver'), or use a model with "
                 "a longer context")
    if run.max_tokens > limit - prompt:
        run.metadata["max_tokens_capped"] = {"requested": run.max_tokens, "to": limit - prompt,
                                             "context_length": limit}
        run.max_tokens = limit - prompt


def _check_fits(prepared: Prepared, max_tokens: int, backend: Backend) -> None:
    budget = backend.request_budget_bytes()
    per_token = backend.kv_bytes_per_token
    if budget is None or not per_token:
        return
    tokens = prepared.prompt_tokens + max_tokens
    if tokens * per_token > budget:
        fits = budget // per_token
        raise RequestTooLarge(
            f"the prompt ({prepared.prompt_tokens} tokens, {prepared.image_tokens} of them image tokens) plus "
            f"max_tokens={max_tokens} needs {human_bytes(tokens * per_token)} of KV cache; "
            f"{human_bytes(budget)} is free for it, enough for {fits} tokens in all",
            requested_bytes=tokens * per_token, free_bytes=budget, device=backend.device,
            hint=f"lower max_tokens to at most {max(0, fits - prepared.prompt_tokens)}, send smaller images "
                 "(image_tier='battery') or text only")


def _as_optascan_error(err: Exception, backend: Backend) -> BaseException:
    if isinstance(err, (OptascanError, CancelledRun)):
        return err
    mapped = backend.map_error(err, "generation")
    return mapped if mapped is not None else GenerationFailed(f"generation failed: {type(err).__name__}: {err}")


def _smaller_tier(tier: str) -> str | None:
    order = list(IMAGE_TIERS)
    return order[order.index(tier) + 1] if order.index(tier) + 1 < len(order) else None


def finish_unstarted(job: Job, model_name: str) -> None:
    """A job cancelled while it waited in the queue: its final event, from the cancelling thread."""
    _Run(job, None, model_name).finish(FinishReason.CANCELLED)


class _Run:
    """Per-request state on the worker thread: text so far, token count, what ended it."""

    def __init__(self, job: Job, backend: Backend | None, model_name: str) -> None:
        self.job, self.backend, self.model_name = job, backend, model_name
        self.max_tokens = job.sampling.max_tokens
        self.state = State.QUEUED
        self.tokens = 0
        self.text = ""
        self.reason: FinishReason | None = None
        self.inputs: Prepared | None = None
        self.images: list[PreparedImage] = []
        self.metadata: dict = {}  # what the result reports beyond usage and timings (e.g. an OOM retry)
        self.detokenizer: IncrementalDetokenizer | None = None
        self.stops = StopMatcher(job.request.stop)
        self.eos = frozenset() if job.sampling.ignore_eos or backend is None else backend.eos_token_ids

    def enter(self, state: State) -> None:
        self.state = state
        self._emit()

    def prepared(self, prepared: Prepared) -> None:
        self.job.clock.preprocess_done()
        self.inputs = prepared
        assert self.backend is not None
        self.detokenizer = IncrementalDetokenizer(self.backend.decode, prepared.prompt_tail)

    def on_token(self, token_id: int) -> bool:
        """One generated token; returns False when generation must stop after it."""
        self.job.clock.token()
        self.tokens += 1
        self.state = State.GENERATING
        if token_id in self.eos:
            self.reason = FinishReason.STOP
            return False
        assert self.detokenizer is not None
        shown, stopped = self.stops.feed(self.detokenizer.add(token_id))
        self.text += shown
        self._emit(shown)
        if stopped:
            self.reason = FinishReason.STOP
        elif self.tokens >= self.max_tokens:
            self.reason = FinishReason.LENGTH
        return self.reason is None

    def finish(self, reason: FinishReason, error: OptascanError | None = None) -> None:
        tail = ""
        if self.stops.matched is None:  # text held back for a stop string that never came
            tail = self.stops.feed(self.detokenizer.flush())[0] if self.detokenizer else ""
            tail += self.stops.flush()
        self.text += tail
        self.state = _FINAL_STATE[reason]
        prepared = self.inputs
        result = Result(
            request_id=self.job.id, model=self.model_name, text=self.text, finish_reason=reason,
            usage=Usage(prompt_tokens=prepared.prompt_tokens if prepared else 0,
                        image_tokens=prepared.image_tokens if prepared else 0, completion_tokens=self.tokens),
            timings=self.job.clock.timings(self.tokens), error=error,
            metadata={"seed": self.job.sampling.seed, "images": [image.describe() for image in self.images],
                      **(prepared.metadata if prepared else {}), **self.metadata,
                      **({"cancel_reason": self.job.cancel.reason} if reason is FinishReason.CANCELLED else {})},
        )
        self._emit(tail, result)

    def _emit(self, delta: str = "", result: Result | None = None) -> None:
        clock = self.job.clock
        self.job.sink(Event(
            self.job.id, self.state, delta=delta, tokens=self.tokens, max_tokens=self.max_tokens,
            tokens_per_s=clock.tokens_per_s(self.tokens),
            eta_s=clock.eta_s(self.tokens, self.max_tokens) if self.state is State.GENERATING else None,
            result=result,
        ))
