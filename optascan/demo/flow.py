"""The Opta flow on a scene of shapes: what the demo model should say at each turn (training data and test oracle).

Two goals, each with two phrasings:

- *pick* ("Which shape should I pick?"): the model describes the scene and asks which colour the user likes
  (which shape, where all shapes share one colour; nothing, where there is one kind of shape), then ranks the
  shapes with the user's choice first;
- *rank* ("Rank the colours by how many shapes they have."): no question; the colours ranked by their count.

Replies are the JSON the constrained decoder allows: schema property order, ``json.dumps`` separators (the
grammar is compiled without free whitespace). The scene is described region by region in reading order (top,
left, centre, right, bottom: one image cell each), and options are listed in that order with scores that rank
them: the flow sorts options by score, so the model never has to sort. (A first form that grouped, counted
and sorted the shapes was not learned in 370 s of training; the model card has what this one reaches.)
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


def regions(scene: Scene) -> list[tuple[str, str | None]]:
    """(position, "colour shape" or None) for the five regions, in reading order."""
    at = {item.position: f"{item.colour} {item.shape}" for item in scene.items}
    return [(position, at.get(position)) for position in READING_ORDER]


def describe(scene: Scene) -> str:
    # region by region, empty ones too: each phrase reads one image cell (the model's 3×3 grid)
    return " ".join(f"{position.capitalize()}: {what or 'nothing'}." for position, what in regions(scene))


def analysis_reply(scene: Scene, goal: str) -> str:
    if goal in RANK_GOALS:
        understanding = "You want the colours ranked by how many shapes they have. " + describe(scene)
        return _dumps({"understanding": understanding, "questions": []})
    understanding = "You want to pick one shape. " + describe(scene)
    shown = [what.split() for _, what in regions(scene) if what]
    colours = _unique(colour for colour, _ in shown)
    shapes = _unique(shape for _, shape in shown)
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
    """Options in reading order; their scores rank them (the flow sorts by score, ties keep this order)."""
    shown = [(position, what) for position, what in regions(scene) if what]
    if goal in RANK_GOALS:
        counts = {}
        for _, what in shown:
            colour = what.split()[0]
            counts[colour] = counts.get(colour, 0) + 1
        options = [{"name": colour, "score": 2 * n, "why": f"{n} shape{'s' if n > 1 else ''}"}
                   for colour, n in counts.items()]
        return _dumps({"title": "Colours by number of shapes",
                       "summary": "Ranked by how many shapes of each colour I see.", "options": options})
    choice = answers.get("colour") or answers.get("shape")
    names = [f"{what} ({position})" for position, what in shown]
    if not isinstance(choice, str):  # no question asked, or skipped: reading order, no preference
        options = [{"name": name, "score": 5, "why": "no preference given"} for name in names]
        return _dumps({"title": f"Pick the {names[0]}", "summary": f"The {names[0]} comes first.",
                       "options": options})
    matches = [choice in what.split() for _, what in shown]
    options = [{"name": name, "score": 9 if match else 4, "why": f"{choice}, as you asked" if match
                else f"not {choice}"} for name, match in zip(names, matches, strict=True)]
    best = names[matches.index(True)] if any(matches) else names[0]
    return _dumps({"title": f"Pick the {best}", "summary": f"The {best} is {choice}, as you asked.",
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


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)
