"""The synthetic "scan" dataset: scenes of coloured shapes and questions about them, seeded.

Pure Python + Pillow. A scene holds 1–5 shapes, each in its own region (left, right, top, bottom, centre),
so "where is the red square?" always has one answer. The demo model is trained on these and the eval
(tests/integration/test_demo_eval.py) asks held-out ones through the public API.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "orange": (245, 140, 30), "purple": (140, 60, 190), "black": (25, 25, 25), "white": (250, 250, 250)}
POSITIONS = ("left", "right", "top", "bottom", "centre")
# region centres as fractions of width and height
_CENTRES = {"left": (0.17, 0.5), "right": (0.83, 0.5), "top": (0.5, 0.17), "bottom": (0.5, 0.83),
            "centre": (0.5, 0.5)}
QUESTION_TYPES = ("colour", "count", "where", "shapes")
NUMBERS = ("0", "1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    position: str


@dataclass(frozen=True)
class Scene:
    items: tuple[Item, ...]
    background: tuple[int, int, int]
    size: tuple[int, int]


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str


def random_scene(rng: random.Random, size: tuple[int, int] | None = None) -> Scene:
    count = rng.randint(1, 5)
    positions = rng.sample(POSITIONS, count)
    items = [Item(rng.choice(SHAPES), rng.choice(list(COLOURS)), p) for p in positions]
    if count >= 2 and rng.random() < 0.4:  # repeats ("two red circles"), rare by chance alone
        twins = rng.randint(2, count)
        items = [Item(items[0].shape, items[0].colour, i.position) if k < twins else i for k, i in enumerate(items)]
    items = tuple(items)
    used = {COLOURS[i.colour] for i in items}
    background = _background(rng, used)
    if size is None:
        width = rng.randint(160, 480)
        size = (width, int(width * rng.choice((0.75, 1.0, 1.0, 1.33, 0.6, 1.6))))
    return Scene(items, background, size)


def _background(rng: random.Random, used: set) -> tuple[int, int, int]:
    while True:
        grey = rng.randint(90, 200)
        colour = (grey + rng.randint(-25, 25), grey + rng.randint(-25, 25), grey + rng.randint(-25, 25))
        colour = tuple(max(0, min(255, c)) for c in colour)
        if all(sum(abs(a - b) for a, b in zip(colour, u, strict=True)) > 120 for u in used):
            return colour


def render(scene: Scene, rng: random.Random | None = None) -> Image.Image:
    rng = rng or random.Random(0)
    width, height = scene.size
    image = Image.new("RGB", scene.size, scene.background)
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    for item in scene.items:
        cx, cy = _CENTRES[item.position]
        cx = cx * width + rng.uniform(-0.04, 0.04) * width
        cy = cy * height + rng.uniform(-0.04, 0.04) * height
        radius = unit * rng.uniform(0.09, 0.13)
        _draw_shape(draw, item.shape, cx, cy, radius, COLOURS[item.colour], rng.uniform(0, 0.3))
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, turn: float) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a))
                      for a in (-math.pi / 2 + turn * 0.2 + k * 2 * math.pi / 3 for k in range(3))], fill=fill)
    else:  # star: five points, inner radius 0.45 r
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + turn * 0.2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)


def questions(scene: Scene, rng: random.Random) -> list[Question]:
    """All question kinds that have one right answer for this scene (one of each where possible)."""
    out = []
    shapes = [i.shape for i in scene.items]
    unique_shapes = [s for s in SHAPES if shapes.count(s) == 1]
    if unique_shapes:
        shape = rng.choice(unique_shapes)
        item = next(i for i in scene.items if i.shape == shape)
        out.append(Question("colour", f"What colour is the {shape}?", item.colour))
    # Two counts, by shape and by colour and shape. Each asks about something in the scene half the time and
    # about a random one (often 0) otherwise, so the answers spread over 0–5.
    present = rng.choice(scene.items) if rng.random() < 0.5 else None
    shape = present.shape if present else rng.choice(SHAPES)
    out.append(Question("count", f"How many {shape}s are there?", NUMBERS[shapes.count(shape)]))
    present = rng.choice(scene.items) if rng.random() < 0.5 else None
    shape = present.shape if present else rng.choice(SHAPES)
    colour = present.colour if present else rng.choice(list(COLOURS))
    n = sum(1 for i in scene.items if i.shape == shape and i.colour == colour)
    out.append(Question("count", f"How many {colour} {shape}s are there?", NUMBERS[n]))
    pairs = [(i.colour, i.shape) for i in scene.items]
    unique = [i for i in scene.items if pairs.count((i.colour, i.shape)) == 1]
    if unique:
        item = rng.choice(unique)
        out.append(Question("where", f"Where is the {item.colour} {item.shape}?", item.position))
    seen = ", ".join(s for s in SHAPES if s in shapes)
    out.append(Question("shapes", "What shapes do you see?", seen))
    return out


def sample(seed: int) -> tuple[Image.Image, Scene, list[Question]]:
    """Scene number ``seed``: its image, the scene, and its questions (deterministic)."""
    rng = random.Random(seed)
    scene = random_scene(rng)
    return render(scene, rng), scene, questions(scene, rng)
