"""A vision tower replayed as a CUDA graph, for towers whose input has one fixed shape (LLaVA-1.5's CLIP ViT-L:
every image is resized and cropped to 336×336). On by default for LLaVA on CUDA; OPTASCAN_FAST_VISION_GRAPH=0 runs
the tower eagerly.

Why: CLIP ViT-L's 24 layers are ~300 small kernels for 577 tokens; on an H100 the host's launches, not their work,
set the vision stage's time (9 ms of LLaVA-7B's 30 ms time to first token, bench/results/fast_decode-h100-
llava-1.5-7b-full-vision-2026-11-26.json), and LLaVA's prompt pass is bound by matmul throughput, so the vision
stage is where time to first token can still shrink. Measured on an H100 with CLIP ViT-L: vision + merge 12.0 → 3.0 ms,
time to first token 30.5 → 23.2 ms, the same tokens (bench/results/fast_decode-h100-llava-1.5-7b-full-vision-2026-11-26-
at-95ac6be.json; GPU check: tests/gpu/results/fast_checks-vision-h100-2026-11-26.json).

The tower stays transformers' module and runs transformers' own forward: its ``forward`` is replaced, on this
instance only, by a callable that copies the pixels into a static buffer and replays the graph captured from
that same forward, for the call the LLaVA model makes (all hidden states, as a dict). Any other call (another
shape or dtype, other arguments) runs the forward eagerly. A graph per input (shape, dtype) is captured the
first time that input is seen, after one eager warm run; the fast backend does that at load with a blank image
through the real processor, so requests replay it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .graphs import warm_and_capture


class GraphedTower:
    def __init__(self, tower: torch.nn.Module,
                 capture: Callable[[Callable[[Any], None]], dict[Any, Any]] | None = None) -> None:
        self.tower, self.eager = tower, tower.forward
        # capture(run) -> {key: graph}: warm_and_capture on CUDA; the tests pass their own (CPU has no graphs)
        self._capture_with = capture or self._cuda_capture
        self.graphs: dict[tuple, tuple[Any, torch.Tensor, Any]] = {}  # key → (graph, input buffer, output)
        self.warmup_parts: dict[str, float] = {}
        tower.forward = self  # nn.Module.__call__ finds the instance attribute first

    def _cuda_capture(self, run: Callable[[Any], None]) -> dict[Any, Any]:
        graphs, self.warmup_parts = warm_and_capture([0], run, ("vision_first_s", "vision_other_s", "vision_capture_s"))
        return graphs

    def __call__(self, pixel_values: torch.Tensor, *args: Any, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None, **kwargs: Any) -> Any:
        if args or kwargs or not output_hidden_states or return_dict is False:
            return self.eager(pixel_values, *args, output_hidden_states=output_hidden_states,
                              return_dict=return_dict, **kwargs)
        key = (tuple(pixel_values.shape), pixel_values.dtype, pixel_values.device)
        if key not in self.graphs:
            self.graphs[key] = self._capture(pixel_values)
        graph, pixels, output = self.graphs[key]
        pixels.copy_(pixel_values)
        graph.replay()
        return output  # the graph's own tensors: read before the next call (the model projects them at once)

    def _capture(self, pixel_values: torch.Tensor) -> tuple[Any, torch.Tensor, Any]:
        pixels = pixel_values.clone()
        outputs: list[Any] = []

        def run(_key: Any) -> None:  # the last run is the captured one: its output tensors are the graph's
            outputs[:] = [self.eager(pixels, output_hidden_states=True, return_dict=True)]

        graph = self._capture_with(run)[0]
        return graph, pixels, outputs[0]

    def release(self) -> None:
        """The tower's own forward back, and the graphs' memory freed."""
        self.tower.__dict__.pop("forward", None)
        self.graphs.clear()
