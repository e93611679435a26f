"""The Opta flow's structured parts: clarifying questions and the optimized answer, as data and as JSON Schema.

The schemas drive constrained decoding where a backend supports it; ``analysis_from`` / ``answer_from`` turn a
parsed reply into validated dataclasses (or ``ParseError`` naming what is wrong, with the raw reply).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ParseError

QUESTION_KINDS = ("single_choice", "multi_choice", "text", "slider")
MAX_QUESTIONS = 3


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    prompt: str
    options: tuple[str, ...] = ()  # single_choice / multi_choice
    placeholder: str | None = None  # text
    min: float | None = None  # slider
    max: float | None = None
    default: float | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Analysis:
    understanding: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class RankedOption:
    name: str
    score: float  # 0..10
    why: str


@dataclass(frozen=True)
class OptimizedAnswer:
    title: str
    summary: str
    options: tuple[RankedOption, ...]  # best first
    highlights: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()
    markdown: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        return asdict(self)


# Bounded lengths keep even a weak model's constrained output finite; real answers fit easily.
_STR = {"type": "string", "minLength": 1, "maxLength": 400}
_SHORT = {"type": "string", "minLength": 1, "maxLength": 80}
_POINT = {"type": "string", "minLength": 1, "maxLength": 200}
_NUMBER = {"type": "number"}


def _question_schema(kind: str, extra: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": {"id": _SHORT, "kind": {"const": kind}, "prompt": _STR, **extra},
            "required": ["id", "kind", "prompt", *required], "additionalProperties": False}


_CHOICES = {"options": {"type": "array", "items": _SHORT, "minItems": 2, "maxItems": 8}}
ANALYSIS_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "understanding": _STR,
        "questions": {"type": "array", "maxItems": MAX_QUESTIONS, "items": {"anyOf": [
            _question_schema("single_choice", _CHOICES, ["options"]),
            _question_schema("multi_choice", _CHOICES, ["options"]),
            _question_schema("text", {"placeholder": _SHORT}, []),
            _question_schema("slider", {"min": _NUMBER, "max": _NUMBER, "default": _NUMBER, "unit": _SHORT},
                             ["min", "max"]),
        ]}},
    },
    "required": ["understanding", "questions"],
    "additionalProperties": False,
}
ANSWER_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "title": _SHORT, "summary": _STR,
        "options": {"type": "array", "maxItems": 6, "items": {"type": "object", "properties": {
            "name": _SHORT, "score": {"type": "number", "minimum": 0, "maximum": 10}, "why": _POINT},
            "required": ["name", "score", "why"], "additionalProperties": False}},
        "highlights": {"type": "array", "items": _POINT, "maxItems": 4},
        "caveats": {"type": "array", "items": _POINT, "maxItems": 4},
    },
    "required": ["title", "summary", "options"],
    "additionalProperties": False,
}


def analysis_from(obj: dict[str, Any], raw: str) -> Analysis:
    understanding = _text(obj, "understanding", raw)
    questions = obj.get("questions") or []
    if not isinstance(questions, list):
        raise ParseError("'questions' must be a list", raw=raw)
    parsed = tuple(_question(q, i, raw) for i, q in enumerate(questions[:MAX_QUESTIONS]))
    return Analysis(understanding, parsed)


def answer_from(obj: dict[str, Any], raw: str) -> OptimizedAnswer:
    options = obj.get("options") or []
    if not isinstance(options, list):
        raise ParseError("'options' must be a list", raw=raw)
    ranked = []
    for i, o in enumerate(options):
        if not isinstance(o, dict):
            raise ParseError(f"options[{i}] is not an object", raw=raw)
        ranked.append(RankedOption(_text(o, "name", raw), _score(o.get("score"), i, raw), str(o.get("why", ""))))
    ranked.sort(key=lambda o: o.score, reverse=True)  # best first, whatever order the model wrote
    return OptimizedAnswer(_text(obj, "title", raw), _text(obj, "summary", raw), tuple(ranked),
                           _strings(obj.get("highlights")), _strings(obj.get("caveats")))


def schema_text(schema: dict) -> str:
    """The schema as compact JSON, for prompts."""
    return json.dumps(schema, separators=(",", ":"))


def _question(q: Any, index: int, raw: str) -> Question:
    if not isinstance(q, dict):
        raise ParseError(f"questions[{index}] is not an object", raw=raw)
    kind = q.get("kind")
    if kind not in QUESTION_KINDS:
        raise ParseError(f"questions[{index}].kind must be one of {', '.join(QUESTION_KINDS)}, got {kind!r}", raw=raw)
    options = _strings(q.get("options"))
    if kind in ("single_choice", "multi_choice") and len(options) < 2:
        raise ParseError(f"questions[{index}] is a choice with fewer than two options", raw=raw)
    low, high = _number(q.get("min")), _number(q.get("max"))
    if kind == "slider" and (low is None or high is None or low >= high):
        raise ParseError(f"questions[{index}] is a slider without a valid min < max", raw=raw)
    default = _number(q.get("default"))
    if kind == "slider" and default is not None:
        default = min(max(default, low), high)  # type: ignore[type-var]
    return Question(id=str(q.get("id") or f"q{index + 1}"), kind=kind, prompt=_text(q, "prompt", raw),
                    options=options, placeholder=q.get("placeholder") if kind == "text" else None,
                    min=low if kind == "slider" else None, max=high if kind == "slider" else None,
                    default=default if kind == "slider" else None, unit=q.get("unit") if kind == "slider" else None)


def _text(obj: dict, key: str, raw: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"'{key}' is missing or empty", raw=raw)
    return value.strip()


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _score(value: Any, index: int, raw: str) -> float:
    number = _number(value)
    if number is None:
        raise ParseError(f"options[{index}].score is not a number", raw=raw)
    return min(10.0, max(0.0, number))
