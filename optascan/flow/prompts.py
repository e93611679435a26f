"""Prompts of the Opta flow: the depth presets and the two turns (analyze, then answer).

The follow-up keeps the whole conversation, image included: the original app sent a text summary instead,
which lost what the model had seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from .schema import ANALYSIS_SCHEMA, ANSWER_SCHEMA, MAX_QUESTIONS, schema_text


@dataclass(frozen=True)
class Depth:
    name: str
    max_questions: int
    analyze_tokens: int
    answer_tokens: int
    guidance: str


DEPTHS = {
    "quick": Depth("quick", 1, 256, 512, "Be brief: ask at most one question, and only if the goal is ambiguous."),
    "balanced": Depth("balanced", MAX_QUESTIONS, 384, 1024, "Ask only what changes the recommendation."),
    "thorough": Depth("thorough", MAX_QUESTIONS, 512, 2048,
                      "Consider every option you can read; explain trade-offs and what you could not see."),
}

SYSTEM = ("You are Opta, an assistant that optimizes decisions from photos: menus, shelves, receipts, product "
          "pages. Read everything visible. Never invent items or prices that are not in the image.")


def depth(name: str) -> Depth:
    if name not in DEPTHS:
        raise InvalidRequest(f"unknown depth {name!r}; use one of {', '.join(DEPTHS)}", field="depth")
    return DEPTHS[name]


def analyze_messages(goal: str, images: list[Any], chosen: Depth) -> list[dict]:
    if not goal or not goal.strip():
        raise InvalidRequest("the goal is empty", field="goal")
    instruction = (f"Goal: {goal.strip()}\n\nState in one sentence what you understood from the image(s) and the "
                   f"goal, then ask at most {chosen.max_questions} clarifying question(s) that would change the "
                   f"answer (none if the goal is clear). {chosen.guidance}\nReply with JSON only, matching this "
                   f"schema: {schema_text(ANALYSIS_SCHEMA)}")
    content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": instruction}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def answer_messages(history: list[dict], analysis_reply: str, answers: dict[str, Any], chosen: Depth) -> list[dict]:
    answered = json.dumps(answers, ensure_ascii=False) if answers else "(no questions were asked)"
    instruction = (f"My answers: {answered}\n\nNow give the optimized answer: a title, a two-sentence summary, the "
                   f"options ranked best first with a score from 0 to 10 and why, highlights and caveats. "
                   f"{chosen.guidance}\nReply with JSON only, matching this schema: {schema_text(ANSWER_SCHEMA)}")
    return [*history, {"role": "assistant", "content": analysis_reply},
            {"role": "user", "content": [{"type": "text", "text": instruction}]}]
