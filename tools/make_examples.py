"""Render the example photos in examples/ from the demo dataset's scene generator (reproducible).

    python tools/make_examples.py

shapes.jpg: two red circles, a blue square, a yellow star and a green triangle, the README's first scan.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optascan.demo.scenes import Item, Scene, render  # noqa: E402


def main() -> None:
    scene = Scene(items=(Item("circle", "red", "left"), Item("circle", "red", "top"), Item("square", "blue", "right"),
                         Item("star", "yellow", "bottom"), Item("triangle", "green", "centre")),
                  background=(150, 150, 160), size=(640, 480))
    render(scene, random.Random(7)).save(ROOT / "examples" / "shapes.jpg", quality=92)


if __name__ == "__main__":
    main()
