"""The Opta flow on a scene of shapes: what the demo model should say at each turn (training data and test oracle).

Two goals, each with two phrasings:

- *pick* ("Which shape should I pick?"): the model describes the scene and asks which colour the user likes
  (which shape, where all shapes share one colour; nothing, where there is one kind of shape), then ranks the
  shapes with the user's choice first;
- *rank* ("Rank the colours by how many shapes they have."): no question; the colours ranked by their count.

Replies are the JSON the constrained decoder allows: schema property order, ``json.dumps`` separators (the
grammar is compiled without free whitespace). Shapes are listed in reading order (top, left, centre, right,
bottom), which the model can see, unlike the order the generator drew them in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from .scenes import Scene

PICK_GOALS = ("Which shape should I pick?", "Help me pick a shape.")
RANK_GOALS = ("Rank the colours by how many shapes they have.", "Which colour has the most shapes?")
GOALS = PICK_GOALS + RANK_GOALS
READING_ORDER = ("top", "left", "centre", "right", "bottom")


@dataclass(frozen=True)
class FlowTurns:
    """One scene's flow: the analysis reply, the user's answers, the final reply (JSON strings)."""

    goal: str
    analysis: str
    answers: dict[str, Any]
    answer: str


def groups(scene: Scene) -> list[tuple[str, str, int]]:
    """(colour, shape, count) for each kind of shape, in reading order of first appearance."""
    seen: dict[tuple[str, str], int] = {}
    for item in sorted(scene.items, key=lambda i: READING_ORDER.index(i.position)):
        seen[(item.colour, item.shape)] = seen.get((item.colour, item.shape), 0) + 1
    return [(colour, shape, n) for (colour, shape), n in seen.items()]


def describe(scene: Scene) -> str:
    parts = [f"a {c} {s}" if n == 1 else f"{n} {c} {s}s" for c, s, n in groups(scene)]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"I see {listed}."


def analysis_reply(scene: Scene, goal: str) -> str:
    kinds = groups(scene)
    if goal in RANK_GOALS:
        understanding = "You want the colours ranked by how many shapes they have. " + describe(scene)
        return _dumps({"understanding": understanding, "questions": []})
    understanding = "You want to pick one shape. " + describe(scene)
    colours = _unique(c for c, _, _ in kinds)
    shapes = _unique(s for _, s, _ in kinds)
    if len(colours) >= 2:
        question = {"id": "colour", "kind": "single_choice", "prompt": "Which colour do you like best?",
                    "options": colours}
    elif len(shapes) >= 2:
        question = {"id": "shape", "kind": "single_choice", "prompt": "Which shape do you like best?",
                    "options": shapes}
    else:
        return _dumps({"understanding": understanding, "questions": []})
    return _dumps({"understanding": understanding, "questions": [question]})


def answer_reply(scene: Scene, goal: str, answers: dict[str, Any]) -> str:
    kinds = groups(scene)
    total = sum(n for _, _, n in kinds)
    in_all = f"I see {total} shape{'s' if total > 1 else ''} in all."
    if goal in RANK_GOALS:
        counts: dict[str, int] = {}
        for colour, _, n in kinds:
            counts[colour] = counts.get(colour, 0) + n
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties stay in reading order
        top, most = ranked[0]
        options = [{"name": c, "score": 2 * n, "why": _shapes(n)} for c, n in ranked]
        return _dumps({"title": f"{top} has the most shapes", "summary": f"{top} has {_shapes(most)}. {in_all}",
                       "options": options})
    choice = answers.get("colour") or answers.get("shape")
    if not isinstance(choice, str):  # no question asked, or skipped: reading order, no preference
        options = [{"name": f"{c} {s}", "score": 5, "why": "no preference given"} for c, s, _ in kinds]
        first = f"{kinds[0][0]} {kinds[0][1]}"
        return _dumps({"title": f"Pick the {first}", "summary": f"The {first} comes first. {in_all}",
                       "options": options})
    matching = [(c, s) for c, s, _ in kinds if choice in (c, s)]
    others = [(c, s) for c, s, _ in kinds if choice not in (c, s)]
    options = ([{"name": f"{c} {s}", "score": 9, "why": f"{choice}, as you asked"} for c, s in matching]
               + [{"name": f"{c} {s}", "score": 4, "why": f"not {choice}"} for c, s in others])
    best = options[0]["name"]
    return _dumps({"title": f"Pick the {best}", "summary": f"The {best} is {choice}, as you asked. {in_all}",
                   "options": options})


def flow_turns(scene: Scene, rng: random.Random, goal: str | None = None) -> FlowTurns:
    """A goal (random unless given), the analysis, a user's answer to its question, and the final answer."""
    goal = goal or rng.choice(GOALS)
    analysis = analysis_reply(scene, goal)
    answers: dict[str, Any] = {}
    for question in json.loads(analysis)["questions"]:
        if rng.random() < 0.9:  # users sometimes skip a question
            answers[question["id"]] = rng.choice(question["options"])
    return FlowTurns(goal, analysis, answers, answer_reply(scene, goal, answers))


def _shapes(n: int) -> str:
    return f"{n} shape{'s' if n > 1 else ''}"


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)
