"""One Opta session: photo(s) + goal → ``analyze()`` (clarifying questions) → ``answer(...)`` → ``result``.

    session = OptaSession(engine, "most filling under $15", images=["menu.jpg"], depth="balanced")
    analysis = session.analyze(on_event=print_progress)      # streamed like any generation
    answer = session.answer({"budget": 15, "diet": ["vegetarian"]})
    print(answer.markdown)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..engine.cancel import CancelToken
from ..engine.engine import Engine
from ..errors import InvalidRequest
from ..images.prepare import prepare_image
from ..types import Event, Result
from .history import History
from .parse import parse_json
from .prompts import analyze_messages, answer_messages, depth
from .schema import ANALYSIS_SCHEMA, ANSWER_SCHEMA, Analysis, OptimizedAnswer, analysis_from, answer_from


class OptaSession:
    def __init__(self, engine: Engine, goal: str, *, images: Sequence[Any] = (), depth_name: str = "balanced",
                 seed: int | None = None, constrained: bool | None = None) -> None:
        self.engine, self.goal, self.images, self.seed = engine, goal, list(images), seed
        # JSON-schema constrained decoding where the backend has it (None: automatic), else the tolerant parser
        self.constrained = engine.backend.supports_json_schema if constrained is None else constrained
        self.depth = depth(depth_name)
        self.analysis: Analysis | None = None
        self.result: OptimizedAnswer | None = None
        self.generations: list[Result] = []  # both turns' results: usage and timings for history and the UI
        self._history = analyze_messages(goal, self.images, self.depth)
        self._analysis_reply = ""
        self.answers: dict[str, Any] = {}

    def analyze(self, *, on_event: Callable[[Event], None] | None = None,
                cancel: CancelToken | None = None) -> Analysis:
        result = self._generate(self._history, self.depth.analyze_tokens, on_event, cancel, ANALYSIS_SCHEMA)
        self._analysis_reply = result.text
        self.analysis = analysis_from(parse_json(result.text), result.text)
        if len(self.analysis.questions) > self.depth.max_questions:
            self.analysis = Analysis(self.analysis.understanding, self.analysis.questions[: self.depth.max_questions])
        return self.analysis

    def answer(self, answers: dict[str, Any] | None = None, *, on_event: Callable[[Event], None] | None = None,
               cancel: CancelToken | None = None) -> OptimizedAnswer:
        if self.analysis is None:
            raise InvalidRequest("call analyze() before answer()", field="answers")
        answers = dict(answers or {})
        self.answers = answers
        unknown = set(answers) - {q.id for q in self.analysis.questions}
        if unknown:
            raise InvalidRequest(f"answers to questions that were not asked: {', '.join(sorted(unknown))}",
                                 field="answers")
        messages = answer_messages(self._history, self._analysis_reply, answers, self.depth)
        result = self._generate(messages, self.depth.answer_tokens, on_event, cancel, ANSWER_SCHEMA)
        parsed = answer_from(parse_json(result.text), result.text)
        self.result = OptimizedAnswer(parsed.title, parsed.summary, parsed.options, parsed.highlights,
                                      parsed.caveats, markdown=render_markdown(parsed))
        return self.result

    def record(self, history: History) -> str:
        """Store the completed scan (committed before this returns); returns its id."""
        if self.result is None or self.analysis is None:
            raise InvalidRequest("only a completed session (analyze, then answer) can be recorded")
        image = self.images[0] if self.images else None
        return history.record(
            goal=self.goal, depth=self.depth.name, model=self.engine.name,
            questions=[vars(q) for q in self.analysis.questions], answers=self.answers,
            result=self.result.to_dict(), timings={"turns": [vars(g.timings) for g in self.generations]},
            image=prepare_image(image, settings=self.engine.image_settings).image if image is not None else None)

    def _generate(self, messages: list[dict], max_tokens: int, on_event, cancel, schema: dict) -> Result:
        result = self.engine.generate(messages=messages, max_tokens=max_tokens, seed=self.seed, on_event=on_event,
                                      cancel=cancel, raise_on_cancel=True,
                                      json_schema=schema if self.constrained else None)
        self.generations.append(result)
        return result


def render_markdown(answer: OptimizedAnswer) -> str:
    """The answer as markdown that is easy to scan: summary, a ranked table, highlights, caveats."""
    lines = [f"## {answer.title}", "", answer.summary, ""]
    if answer.options:
        lines += ["| # | Option | Score | Why |", "|---|---|---|---|"]
        lines += [f"| {i} | {o.name} | {o.score:g}/10 | {o.why} |" for i, o in enumerate(answer.options, 1)]
        lines.append("")
    for heading, items in (("Highlights", answer.highlights), ("Caveats", answer.caveats)):
        if items:
            lines += [f"**{heading}**", *[f"- {item}" for item in items], ""]
    return "\n".join(lines).rstrip() + "\n"
