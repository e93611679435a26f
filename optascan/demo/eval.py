"""The demo model's eval, as a test oracle: held-out scenes, asked through any surface (API, CLI, server).

``ask(image_bytes, question) -> answer`` is the surface under test. Scenes come from seeds below 100,000,
which training never uses. Each scene is asked in one of three forms: as rendered, rotated in the file
with an EXIF orientation tag that undoes it (so "where" answers are only right if orientation is applied),
or upscaled far beyond the model's input size.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

from PIL import Image

from .scenes import sample

VARIANTS = ("plain", "exif_rotated", "large")
# Stored pixels for each EXIF orientation: the upright scene turned so that the tag turns it back.
_STORE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def variant_bytes(image: Image.Image, variant: str, seed: int) -> bytes:
    buf = io.BytesIO()
    if variant == "exif_rotated":
        orientation = (6, 8, 3)[seed % 3]
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.transpose(_STORE[orientation]).save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    elif variant == "large":
        scale = 4000 / max(image.size)
        image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(
            buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def run_eval(ask: Callable[[bytes, str], str], scenes: int = 100, first_seed: int = 0) -> dict:
    """Accuracy per question type and per variant, with the misses (for the note and for debugging)."""
    right: dict[str, list[int]] = {}
    misses = []
    for seed in range(first_seed, first_seed + scenes):
        image, _, questions = sample(seed)
        variant = VARIANTS[seed % len(VARIANTS)]
        data = variant_bytes(image, variant, seed)
        for q in questions:
            answer = ask(data, q.text).strip().rstrip(".").lower()
            ok = answer == q.answer
            right.setdefault(q.kind, []).append(ok)
            right.setdefault(f"variant:{variant}", []).append(ok)
            if not ok:
                misses.append({"seed": seed, "variant": variant, "question": q.text, "expected": q.answer,
                               "answer": answer})
    return {"accuracy": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "questions": sum(len(v) for k, v in right.items() if not k.startswith("variant:")),
            "misses": misses}


# ``flow(image_bytes, goal, depth, answer_questions) -> (analysis, optimized answer)``: the Opta flow through any
# surface; ``answer_questions(questions) -> answers`` plays the user.
Flow = Callable[[bytes, str, str, Callable[[tuple], dict]], tuple]
DEPTHS = ("quick", "balanced", "thorough")


def run_flow_eval(flow: Flow, scenes: int = 20, first_seed: int = 0) -> dict:
    """Both turns of the Opta flow on held-out scenes, each goal and depth in turn, compared with what they should
    say. The answer is judged against the user's answers to the questions the model really asked."""
    from ..flow.schema import answer_from
    from .flow import GOALS, RANK_GOALS, analysis_reply, answer_reply

    right: dict[str, list[int]] = {}
    misses = []
    for seed in range(first_seed, first_seed + scenes):
        image, scene, _ = sample(seed)
        goal = GOALS[seed % len(GOALS)]
        variant = VARIANTS[seed % len(VARIANTS)]
        given: dict = {}

        def answer_questions(questions, seed=seed, given=given):
            given.update({q.id: q.options[seed % len(q.options)] for q in questions if q.options})
            return dict(given)

        depth = DEPTHS[seed // len(GOALS) % len(DEPTHS)]
        analysis, answer = flow(variant_bytes(image, variant, seed), goal, depth, answer_questions)
        expected_analysis = json.loads(analysis_reply(scene, goal))
        got_analysis = {"understanding": analysis.understanding,
                        "questions": [{"id": q.id, "kind": q.kind, "prompt": q.prompt, "options": list(q.options)}
                                      for q in analysis.questions]}
        expected_reply = answer_reply(scene, goal, given)
        expected_answer = answer_from(json.loads(expected_reply), expected_reply)  # ranked as the flow ranks
        got_answer = {"title": answer.title, "options": [(o.name, o.score) for o in answer.options]}
        want_answer = {"title": expected_answer.title, "options": [(o.name, o.score) for o in expected_answer.options]}
        kind = "rank" if goal in RANK_GOALS else "pick"
        scores = {o.score for o in expected_answer.options}
        parts = {  # what a user would check, one part at a time
            "goal": analysis.understanding.split(". ")[0] == expected_analysis["understanding"].split(". ")[0],
            "question": got_analysis["questions"] == expected_analysis["questions"],
            "analysis": got_analysis == expected_analysis, "answer": got_answer == want_answer}
        if len(scores) > 1:  # "the best option first" means something only where one is better
            parts["top"] = bool(answer.options) and answer.options[0].name in {
                o.name for o in expected_answer.options if o.score == max(scores)}
        for part, ok in parts.items():
            right.setdefault(f"{kind}:{part}", []).append(ok)
        said, truth = _regions(analysis.understanding), _regions(expected_analysis["understanding"])
        right.setdefault("regions", []).extend(said.get(r) == what for r, what in truth.items())
        for turn, got, want in (("analysis", got_analysis, expected_analysis), ("answer", got_answer, want_answer)):
            if not parts[turn]:
                misses.append({"seed": seed, "goal": goal, "depth": depth, "turn": turn, "expected": want,
                               "got": got})
    return {"accuracy": {k: sum(v) / len(v) for k, v in sorted(right.items())}, "scenes": scenes, "misses": misses}


def _regions(understanding: str) -> dict[str, str]:
    """{"Top": "red circle", "Left": "nothing", ...} from the region-by-region description."""
    return dict(re.findall(r"(Top|Left|Centre|Right|Bottom): ([a-z ]+)\.", understanding))


def session_flow(engine) -> Flow:
    """The library surface for ``run_flow_eval``: an ``OptaSession`` on ``engine``."""
    from ..flow.session import OptaSession

    def flow(data: bytes, goal: str, depth: str, answer_questions):
        session = OptaSession(engine, goal, images=[data], depth_name=depth)
        analysis = session.analyze()
        return analysis, session.answer(answer_questions(analysis.questions))

    return flow
