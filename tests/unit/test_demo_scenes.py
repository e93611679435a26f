"""The synthetic scan dataset: deterministic, and every question has exactly the answer the scene implies."""

import random

from optascan.demo.scenes import COLOURS, NUMBERS, POSITIONS, SHAPES, random_scene, render, sample


def test_same_seed_same_scene_image_and_questions():
    a, b = sample(123), sample(123)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1] and a[2] == b[2]
    assert sample(124)[1] != a[1]


def test_answers_follow_from_the_scene():
    kinds = set()
    for seed in range(400):
        _, scene, questions = sample(seed)
        assert 1 <= len(scene.items) <= 5
        assert len({i.position for i in scene.items}) == len(scene.items)  # one object per region
        shapes = [i.shape for i in scene.items]
        for q in questions:
            kinds.add(q.kind)
            if q.kind == "colour":
                shape = q.text.split()[-1].rstrip("?")
                assert shapes.count(shape) == 1
                assert q.answer == next(i.colour for i in scene.items if i.shape == shape)
            elif q.kind == "count":
                words = q.text.rstrip("?").split()
                shape = words[-3].rstrip("s")
                colour = words[2] if len(words) == 6 else None
                expected = sum(1 for i in scene.items if i.shape == shape and colour in (None, i.colour))
                assert q.answer == NUMBERS[expected]
            elif q.kind == "where":
                colour, shape = q.text.rstrip("?").split()[-2:]
                assert [i.position for i in scene.items if (i.colour, i.shape) == (colour, shape)] == [q.answer]
            else:
                assert q.answer == ", ".join(s for s in SHAPES if s in shapes)
    assert kinds == {"colour", "count", "where", "shapes"}


def test_objects_are_drawn_in_their_region_in_their_colour():
    rng = random.Random(5)
    for _ in range(30):
        scene = random_scene(rng, size=(300, 200))
        image = render(scene, random.Random(0))
        centres = {"left": (0.17, 0.5), "right": (0.83, 0.5), "top": (0.5, 0.17), "bottom": (0.5, 0.83),
                   "centre": (0.5, 0.5)}
        for item in scene.items:
            x, y = centres[item.position]
            pixel = image.getpixel((int(x * 300), int(y * 200)))
            assert sum(abs(a - b) for a, b in zip(pixel, COLOURS[item.colour], strict=True)) < 30, item
    assert set(POSITIONS) == set(centres)


def test_eval_variants_come_back_upright_through_the_intake():
    import numpy as np

    from optascan.demo.eval import VARIANTS, variant_bytes
    from optascan.images.prepare import prepare_image

    image = sample(7)[0]
    for seed in range(3):  # orientations 6, 8 and 3
        restored = prepare_image(variant_bytes(image, "exif_rotated", seed), tier="quality").image
        assert restored.size == image.size
        assert np.abs(np.asarray(restored, dtype=int) - np.asarray(image, dtype=int)).mean() < 4
    large = prepare_image(variant_bytes(image, "large", 0)).original_size
    assert max(large) == 4000 and VARIANTS == ("plain", "exif_rotated", "large")


def test_run_eval_scores_per_type_and_variant_and_lists_misses():
    from optascan.demo.eval import run_eval

    truth = iter([(q.text, q.answer) for seed in range(2) for q in sample(seed)[2]])  # the order asked
    asked = []

    def oracle_wrong_once(data: bytes, question: str) -> str:
        asked.append(question)
        text, answer = next(truth)
        assert text == question
        return "wrong" if len(asked) == 1 else answer.upper() + "."  # case and a full stop are forgiven

    report = run_eval(oracle_wrong_once, scenes=2)
    assert report["questions"] == len(asked) == len(sample(0)[2]) + len(sample(1)[2])
    assert len(report["misses"]) == 1 and report["misses"][0]["answer"] == "wrong"
    assert report["accuracy"]["variant:exif_rotated"] == 1.0 and report["accuracy"]["variant:plain"] < 1.0
