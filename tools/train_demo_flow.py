"""Opta-flow training examples for the demo model (used by tools/train_demo.py).

An example is the whole two-turn flow exactly as the engine renders it at inference: the flow's own prompts
(optascan.flow.prompts, every depth), the chat template, the image expanded to its tokens; the labels are the
two JSON replies (optascan.demo.flow) and their end tokens. Everything else (the schema in the prompt, the
goal, the user's answers) is context.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optascan.demo.flow import RANK_GOALS, flow_turns  # noqa: E402
from optascan.demo.scenes import sample  # noqa: E402
from optascan.engine.conversation import to_conversation  # noqa: E402
from optascan.flow.prompts import DEPTHS, analyze_messages, answer_messages  # noqa: E402
from optascan.types import Request  # noqa: E402

END = "<|im_end|>"


def flow_text(image, goal: str, analysis: str, answers: dict, depth_name: str, processor) -> str:
    """The answer turn's prompt as the engine renders it (it holds the analyze turn and its reply)."""
    chosen = DEPTHS[depth_name]
    messages = answer_messages(analyze_messages(goal, [image], chosen), analysis, answers, chosen)
    conversation = to_conversation(Request(messages=messages))
    return processor.apply_chat_template(list(conversation.messages), add_generation_prompt=True, tokenize=False)


def flow_example(seed: int, processor, rng: random.Random, image_tokens: int, pixels_of):
    """(uint8 HWC pixels, ids, label mask, kind): both turns of one flow, the replies labelled."""
    image, scene, _ = sample(seed)
    turns = flow_turns(scene, rng)
    text = flow_text(image, turns.goal, turns.analysis, turns.answers, rng.choice(list(DEPTHS)), processor)
    text = text.replace("<image>", "<image>" * image_tokens)
    start = text.index(turns.analysis)
    rest = text[start + len(turns.analysis):]
    assert rest.startswith(END), "the template must close the assistant turn right after its content"
    tok = processor.tokenizer
    pieces = [(text[:start], False), (turns.analysis, True), (rest[len(END):], False), (turns.answer, True)]
    ids: list[int] = []
    labelled: list[bool] = []
    for piece, is_reply in pieces:
        piece_ids = tok(piece, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if is_reply else [])
        ids += piece_ids
        labelled += [is_reply] * len(piece_ids)
    return pixels_of(image, rng), ids, labelled, "flow:rank" if turns.goal in RANK_GOALS else "flow:pick"
