"""``optascan scan [IMAGE ...] PROMPT``: stream a local model's answer about images to stdout."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any, TextIO

from ..engine.cancel import CancelToken
from ..types import IMAGE_TIERS, Event, FinishReason, Request, State
from .common import add_model_option, add_runtime_options, check_image_paths


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(
        name, help="ask a local model about one or more images",
        usage="optascan scan [options] [IMAGE ...] PROMPT",
        description="Ask a local vision-language model about images. The answer streams to stdout; a live "
                    "status line (phase, tokens, tok/s) goes to stderr when it is a terminal. Ctrl-C cancels "
                    "and prints the partial answer (exit code 130).",
        epilog="example: optascan scan --model ./my-model photo.jpg \"What is on the shelf?\"")
    p.add_argument("inputs", nargs="+", metavar="IMAGE... PROMPT",
                   help="image paths (zero or more), then the prompt")
    add_model_option(p)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="most tokens to generate (default: the mode's: 128 saver, 256 balanced, 512 performance)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1, off)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default: 0, off)")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when TEXT appears (repeatable)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages repeats")
    p.add_argument("--ignore-eos", action="store_true", help="generate max-tokens tokens (for benchmarks)")
    p.add_argument("--image-tier", choices=IMAGE_TIERS, default=None,
                   help="image size cap: quality (2048 px), balanced (~1 MP) or battery (~0.4 MP); default: the mode's")
    add_runtime_options(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, finish_reason, model, usage, timings, engine) instead of "
                        "streaming")


def run(args: argparse.Namespace) -> int:
    *images, prompt = args.inputs
    request = Request(prompt=prompt, images=images, max_tokens=args.max_tokens, temperature=args.temperature,
                      top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop,
                      repetition_penalty=args.repetition_penalty, ignore_eos=args.ignore_eos,
                      image_tier=args.image_tier)
    check_image_paths(images)
    from ..engine.engine import load  # imported late: --help and bad arguments stay instant

    status = StatusLine(sys.stderr, answer_on_same_screen=sys.stdout.isatty())
    status.show("loading model")
    with load(args.model, device=args.device, dtype=args.dtype, mode=args.mode, engine=args.engine) as engine:
        info = engine.info
        cancel = CancelToken()
        previous = signal.signal(signal.SIGINT, _cancel_on_first_interrupt(cancel))
        try:
            final = None
            for event in engine.stream(request, cancel=cancel):
                if event.delta and not args.json:
                    status.clear()
                    sys.stdout.write(event.delta)
                    sys.stdout.flush()
                status.update(event)
                final = event
        finally:
            signal.signal(signal.SIGINT, previous)
    status.clear()
    result = final.result
    if args.json:
        ran = {"backend": info.backend, "device": info.device, "dtype": info.dtype, "choice": info.engine_choice}
        print(json.dumps({**result.to_dict(), "engine": ran}, ensure_ascii=False))
    elif result.text and not result.text.endswith("\n"):
        print()
    if result.error is not None:
        raise result.error
    status.summary(final)
    if result.finish_reason is FinishReason.CANCELLED:
        print("optascan: cancelled", file=sys.stderr)
        return 130
    return 0


def _cancel_on_first_interrupt(cancel: CancelToken):
    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:  # a second Ctrl-C: stop waiting for the step in flight
            raise KeyboardInterrupt
        cancel.cancel("interrupted (Ctrl-C)")

    return handler


class StatusLine:
    """A one-line live status on a terminal's stderr; silent when stderr is not a terminal.

    When the answer streams to the same terminal, the line shows only until the first token (it would
    otherwise overwrite the answer) and a one-line summary follows the answer.
    """

    def __init__(self, stream: TextIO, *, answer_on_same_screen: bool) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.shared = answer_on_same_screen
        self.visible = False
        self.answer_started = False
        self.last_draw = 0.0

    def show(self, text: str) -> None:
        if self.enabled and not (self.shared and self.answer_started):
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self.visible = True

    def clear(self) -> None:
        if self.visible:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.visible = False

    def update(self, event: Event) -> None:
        if event.delta:
            self.answer_started = True
        now = time.monotonic()
        if event.is_final or (event.state is State.GENERATING and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        self.show(describe(event))

    def summary(self, event: Event) -> None:
        if self.enabled and event.result is not None:
            self.stream.write(f"[{describe(event)}]\n")


def describe(event: Event) -> str:
    if event.state is State.QUEUED:
        return f"queued (position {event.queue_position})"
    if event.state in (State.PREPROCESSING, State.PREFILL):
        return f"{event.state.value}…"
    parts = [event.state.value, f"{event.tokens}/{event.max_tokens} tokens"]
    if event.tokens_per_s:
        parts.append(f"{event.tokens_per_s:.1f} tok/s")
    result = event.result
    if result is not None and result.timings.ttft_s is not None:
        parts.append(f"first token {result.timings.ttft_s:.2f} s")
    elif event.eta_s is not None:
        parts.append(f"≤{event.eta_s:.0f} s left")
    return " · ".join(parts)
