"""``optascan optimize IMAGE... "GOAL"``: the Opta flow in the terminal — questions, then the ranked answer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequest
from ..flow.schema import Question
from .common import add_model_option, add_runtime_options, check_image_paths


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(
        name, help="photo + goal → clarifying questions → an optimized, ranked answer",
        usage="optascan optimize [options] IMAGE... GOAL",
        description="Ask a local model to optimize a decision from photos (menus, shelves, receipts). It states "
                    "what it understood and asks up to three questions (answered here, or with --answer ID=VALUE; "
                    "without a terminal the defaults are used), then prints the ranked answer as markdown. "
                    "Completed scans are saved to the history unless --no-history.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE... GOAL", help="image paths, then the goal")
    add_model_option(p)
    p.add_argument("--depth", choices=("quick", "balanced", "thorough"), default="balanced",
                   help="quick: at most one question, short answer; thorough: every option, trade-offs, longer "
                        "answer (default: balanced)")
    p.add_argument("--answer", action="append", default=[], metavar="ID=VALUE",
                   help="answer a question without being asked (repeatable; multi-choice values comma-separated)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for the generations (the flow decodes greedily, so today the result does not "
                        "depend on it)")
    add_runtime_options(p)
    p.add_argument("--no-history", action="store_true", help="do not save this scan")
    p.add_argument("--json", action="store_true", help="print the structured result as JSON")


def run(args: argparse.Namespace) -> int:
    *images, goal = args.inputs
    check_image_paths(images)
    given = parse_answers(args.answer)
    from ..engine.engine import load
    from ..flow.history import History
    from ..flow.session import OptaSession

    with load(args.model, device=args.device, dtype=args.dtype, mode=args.mode, engine=args.engine) as engine:
        session = OptaSession(engine, goal, images=images, depth_name=args.depth, seed=args.seed)
        analysis = session.analyze()
        print(f"Understood: {analysis.understanding}", file=sys.stderr)
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
        answers = ask(analysis.questions, given, input if interactive else None)
        result = session.answer(answers)
        if not args.no_history:
            with History() as history:
                scan_id = session.record(history)
            print(f"saved as {scan_id} (optascan history show {scan_id})", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else result.markdown)
    return 0


def parse_answers(pairs: list[str]) -> dict[str, str]:
    answers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--answer takes ID=VALUE, got {pair!r}", field="answer")
        answers[key.strip()] = value.strip()
    return answers


def ask(questions: tuple[Question, ...], given: dict[str, str],
        prompt: Callable[[str], str] | None) -> dict[str, Any]:
    """Answers for ``questions``: from ``given`` first, else asked through ``prompt``, else the default."""
    unknown = set(given) - {q.id for q in questions}
    if unknown:
        raise InvalidRequest(f"--answer for questions that were not asked: {', '.join(sorted(unknown))}",
                             field="answer", hint="the questions asked were: " + ", ".join(q.id for q in questions))
    answers: dict[str, Any] = {}
    for q in questions:
        raw = given.get(q.id)
        if raw is None and prompt is not None:
            raw = prompt(_render(q)).strip()
        value = _convert(q, raw or "")
        if value is not None:
            answers[q.id] = value
    return answers


def _render(q: Question) -> str:
    if q.kind in ("single_choice", "multi_choice"):
        choices = "  ".join(f"[{i}] {o}" for i, o in enumerate(q.options, 1))
        many = " (several: 1,3)" if q.kind == "multi_choice" else " (default 1)"
        return f"{q.prompt}\n  {choices}{many}: "
    if q.kind == "slider":
        return f"{q.prompt} [{q.min:g}–{q.max:g}{' ' + q.unit if q.unit else ''}, default {_slider_default(q):g}]: "
    return f"{q.prompt}{f' ({q.placeholder})' if q.placeholder else ''}: "


def _convert(q: Question, raw: str) -> Any:
    if q.kind == "slider":
        try:
            value = float(raw) if raw else _slider_default(q)
        except ValueError as err:
            raise InvalidRequest(f"{q.id}: {raw!r} is not a number", field="answer") from err
        return min(max(value, q.min), q.max)  # type: ignore[type-var]
    if q.kind == "text":
        return raw or None
    picked = [p.strip() for p in raw.split(",") if p.strip()] if raw else []
    chosen = [q.options[int(p) - 1] if p.isdigit() and 0 < int(p) <= len(q.options) else p for p in picked]
    if any(c not in q.options for c in chosen):
        raise InvalidRequest(f"{q.id}: choose from {', '.join(q.options)}", field="answer")
    if q.kind == "single_choice":
        return chosen[0] if chosen else q.options[0]
    return chosen


def _slider_default(q: Question) -> float:
    return q.default if q.default is not None else (q.min + q.max) / 2  # type: ignore[operator]
