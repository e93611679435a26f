"""The fast engine's graphed vision tower (optascan/engine/backends/fast/vision_graph.py) on a tiny real LLaVA
checkpoint. CPU has no CUDA graphs, so the capture is emulated behind its seam the way a graph behaves: replay
reruns the captured forward on the static input buffer and writes into the very output tensors the capture
returned (a graph's memory). The real capture is the GPU's (tests/gpu/check_fast.py, on by default there)."""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from optascan.engine.backends.fast.vision_graph import GraphedTower


class EmulatedCapture:
    """``capture(run)`` for GraphedTower: one warm run, one captured run; the graph's replay runs it again and
    copies the fresh outputs into the captured ones."""

    def __init__(self, tower) -> None:
        self.captures, self.replays, self.last = 0, 0, None
        eager = tower.forward

        def recorded(*args, **kwargs):  # the tower's own forward, its last output kept for the emulation
            self.last = eager(*args, **kwargs)
            return self.last

        tower.forward = recorded  # what GraphedTower then takes as the eager forward

    def __call__(self, run):
        run(0)
        run(0)
        captured, emulation = self.last, self

        class Graph:
            def replay(self) -> None:
                run(0)
                fresh = emulation.last
                for old, new in zip((captured.last_hidden_state, *captured.hidden_states),
                                    (fresh.last_hidden_state, *fresh.hidden_states), strict=True):
                    old.copy_(new)
                emulation.replays += 1

        self.captures += 1
        return {0: Graph()}


def llava_and_photos(tiny_dir):
    """(the tiny LLaVA's processor, its float32 model, a function photo -> processor inputs, two photos)."""
    path = tiny_dir("llava")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    photos = [Image.effect_noise((64, 48), 60).convert("RGB"), Image.new("RGB", (40, 40), (200, 60, 30))]
    return processor, model, lambda photo: processor(text=[text], images=[photo], return_tensors="pt"), photos


def test_graphed_tower_gives_the_eager_logits_and_replays_per_image(tiny_dir):
    processor, model, encode, photos = llava_and_photos(tiny_dir)
    inputs = [encode(photo) for photo in photos]
    with torch.inference_mode():
        expected = [model(**i).logits for i in inputs]
    tower = model.model.vision_tower
    emulation = EmulatedCapture(tower)
    graphed = GraphedTower(tower, capture=emulation)
    with torch.inference_mode():
        got = [model(**i).logits for i in inputs]
    assert emulation.captures == 1 and len(graphed.graphs) == 1  # one input shape: one capture
    assert emulation.replays == 2  # each image a replay, the second through the pixels copied in
    for ours, reference in zip(got, expected, strict=True):
        assert torch.equal(ours, reference)
    assert not torch.equal(got[0], got[1])
    with torch.inference_mode():  # another call than the model's (no hidden states asked): eager
        tower(inputs[0]["pixel_values"])
    assert emulation.replays == 2
    # frozen (as the fast backend leaves it after its warm-up): a new input shape, two photos, runs eagerly, with
    # no capture in the middle of a request
    graphed.frozen = True
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    both = processor(text=[text], images=photos, return_tensors="pt")
    assert both["pixel_values"].shape[0] == 2
    with torch.inference_mode():
        ours = model(**both).logits
    assert emulation.captures == 1 and emulation.replays == 2 and len(graphed.graphs) == 1
    graphed.release()
    with torch.inference_mode():
        assert torch.equal(ours, model(**both).logits)  # transformers' own tower
    assert "forward" not in tower.__dict__ and not graphed.graphs


def test_tower_started_by_the_image_processor_is_not_run_twice(tiny_dir):
    """start_tower_early: the image processor replays the graph as soon as it has the pixels (before the prompt
    is tokenized); the model's call for those pixels, handed over by ``follow`` once cast, then takes that output
    without replaying again and gives the eager logits. A call with other pixels replays them as usual."""
    from optascan.engine.backends.fast.vision_graph import start_tower_early

    processor, model, encode, photos = llava_and_photos(tiny_dir)

    with torch.inference_mode():
        expected = [model(**encode(photo)).logits for photo in photos]
    tower = model.model.vision_tower
    emulation = EmulatedCapture(tower)
    graphed = GraphedTower(tower, capture=emulation)
    start_tower_early(processor.image_processor, graphed, torch.float32)
    # as in the engine: the processor runs outside inference mode (prepare), the model inside it (generate)
    with torch.inference_mode():
        model(**encode(photos[0]))  # the first call captures (no graph to start yet)
    for photo, reference in zip(photos[::-1], expected[::-1], strict=True):
        inputs = encode(photo)
        assert emulation.replays >= 1
        started = emulation.replays
        moved = inputs["pixel_values"].clone()  # the backend's cast to the model's dtype: a new tensor
        graphed.follow(inputs["pixel_values"], moved)
        with torch.inference_mode():
            logits = model(**{**inputs, "pixel_values": moved}).logits
        assert emulation.replays == started  # no second replay
        assert torch.equal(logits, reference)
    other = encode(photos[1])
    encode(photos[0])  # the graph now started on the first photo, and the model called with the second's
    replays = emulation.replays
    with torch.inference_mode():
        assert torch.equal(model(**other).logits, expected[1])
    assert emulation.replays == replays + 1
    graphed.release()
    processor.image_processor.__dict__.pop("preprocess")
