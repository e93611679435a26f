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
through the real processor, so requests replay it, and then freezes the set: a request with another input shape
(several images) runs the tower eagerly. And it starts the replay from inside the image processor
(``start_tower_early``), so the tower runs on the GPU while the processor tokenizes the prompt on the host.
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
        self._started: torch.Tensor | None = None  # the pixels a replay was started on, ahead of the model's call
        self._side: Any = None  # the CUDA stream early replays run on
        # once frozen (the fast backend freezes it after its warm-up), a new input shape (another image count) runs
        # eagerly instead of being captured in the middle of a request, with other threads maybe on the GPU
        self.frozen = False
        tower.forward = self  # nn.Module.__call__ finds the instance attribute first

    def _cuda_capture(self, run: Callable[[Any], None]) -> dict[Any, Any]:
        graphs, self.warmup_parts = warm_and_capture([0], run, ("vision_first_s", "vision_other_s", "vision_capture_s"))
        return graphs

    def __call__(self, pixel_values: torch.Tensor, *args: Any, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None, **kwargs: Any) -> Any:
        if args or kwargs or not output_hidden_states or return_dict is False:
            return self.eager(pixel_values, *args, output_hidden_states=output_hidden_states,
                              return_dict=return_dict, **kwargs)
        started, self._started = self._started, None
        if self._side is not None:  # an early replay in flight writes the outputs: it comes first
            torch.cuda.current_stream(self._side.device).wait_stream(self._side)
        key = (tuple(pixel_values.shape), pixel_values.dtype, pixel_values.device)
        if key not in self.graphs:
            if self.frozen:
                return self.eager(pixel_values, output_hidden_states=output_hidden_states, return_dict=return_dict)
            self.graphs[key] = self._capture(pixel_values)
        graph, pixels, output = self.graphs[key]
        if pixel_values is not started:  # else: start() has replayed the graph on these very pixels already
            pixels.copy_(pixel_values)
            graph.replay()
        return output  # the graph's own tensors: read before the next call (the model projects them at once)

    def start(self, pixel_values: torch.Tensor, dtype: torch.dtype) -> None:
        """Replay the graph now, on pixels the image processor has just made (to be cast to ``dtype``, the
        model's): the GPU runs the tower while the host is still tokenizing the prompt. The model's call for the
        same pixels (``follow`` names the cast tensor) then returns the output without a second replay; any other
        call replays as usual. Nothing happens for a shape with no graph yet."""
        self._started = None
        key = (tuple(pixel_values.shape), dtype, pixel_values.device)
        if key not in self.graphs:
            return
        graph, pixels, _ = self.graphs[key]
        with torch.inference_mode():  # the graph's tensors were made in it (at capture); the processor runs outside
            self._replay_early(graph, pixels, pixel_values)
        self._started = pixel_values

    def _replay_early(self, graph: Any, pixels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        if not pixel_values.is_cuda:  # the tests' emulated graphs
            pixels.copy_(pixel_values)
            graph.replay()
        else:
            # on a stream of its own: transformers' processor copies the pixels back to the host before it
            # tokenizes (to count image tokens), and on the model's stream that copy would wait for the tower
            if self._side is None:
                self._side = torch.cuda.Stream(pixel_values.device)
            self._side.wait_stream(torch.cuda.current_stream(pixel_values.device))  # the pixels are ready
            with torch.cuda.stream(self._side):
                pixels.copy_(pixel_values)  # the cast the model's inputs get, the same bits
                graph.replay()
            pixel_values.record_stream(self._side)  # its memory is not reused before the side stream has read it

    def follow(self, source: Any, moved: Any) -> None:
        """``source``, the pixels a replay was started on, is now ``moved`` (cast to the model's dtype)."""
        if source is self._started and source is not None:
            self._started = moved

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
        self._started = None


def start_tower_early(image_processor: Any, tower: GraphedTower, dtype: torch.dtype) -> None:
    """Have ``image_processor`` (transformers', on this instance only) start the graphed tower on the pixels it
    returns. transformers' processors process the images before they tokenize the text (576 image tokens for
    LLaVA-1.5), so the tower's GPU time overlaps the host's tokenizing instead of following it. Undone by
    ``image_processor.__dict__.pop("preprocess")``."""
    preprocess = image_processor.preprocess

    def preprocess_then_start(*args: Any, **kwargs: Any) -> Any:
        processed = preprocess(*args, **kwargs)
        pixels = processed.get("pixel_values")
        if isinstance(pixels, torch.Tensor):
            tower.start(pixels, dtype)
        return processed

    image_processor.preprocess = preprocess_then_start
