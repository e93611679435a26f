"""Compiling in a second process while the weights load: issue #9 asks for a warm-up of at most 15 s after load.

A cold warm-up on an H100 host was 13-15 s, and 8-13 s of it compiling: torch.compile of the per-layer code and
the first builds of our Triton kernels. All of that is CPU work that needs the model's shapes, not its weights,
and torch and Triton keep what they build in caches on disk. So the fast engine starts this module as a process
of its own before it loads the weights: it builds the model's language model with one layer (the config's
shapes, transformers' own classes, random weights), runs the decoder's warm-up on it, and exits. The load's own
warm-up then finds every graph and kernel on disk, as a second load does (5.4-6.6 s on the same hosts). A
thread would not do: compiling is Python and held the GIL against the load (1004ea6: 19.5 s next to the load
against 10 s alone, for no gain).

Best effort: the load waits for it (at most ``WAIT_S``), and a failure costs only the time it would have saved;
the warm-up report says how it went. ``OPTASCAN_FAST_EARLY_COMPILE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WAIT_S = 120.0  # after the load: longer than any cold warm-up measured (19.7 s on the slowest host)


MARGIN_BYTES = 4 << 30  # the compiling process's own GPU memory (context, one layer, embeddings, workspace), and some


def start_if_useful(path: str | Path, device: str, dtype: str, cache_tokens: int,
                    compile_step: bool) -> EarlyCompile | None:
    """The compiling process for a load on CUDA that compiles, where the GPU has room for both processes (the
    weights on disk and a margin: the load must not run out of memory because of it)."""
    if not (device.startswith("cuda") and compile_step) or os.environ.get("OPTASCAN_FAST_EARLY_COMPILE") == "0":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    weights = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in Path(path).glob(pattern))
    if free < weights * 1.1 + MARGIN_BYTES:
        return None
    return EarlyCompile(path, device, dtype, cache_tokens)


class EarlyCompile:
    """The compiling process, started at once; ``finish`` waits for it and says how it went."""

    def __init__(self, path: str | Path, device: str, dtype: str, cache_tokens: int) -> None:
        spec = {"path": str(path), "device": device, "dtype": dtype, "cache_tokens": cache_tokens,
                "started": time.time()}
        self._log = tempfile.TemporaryFile()
        package_root = str(Path(__file__).resolve().parents[4])  # where `import optascan` finds this copy
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(spec)], env=env,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def finish(self, timeout: float = WAIT_S) -> dict[str, Any]:
        """Wait for the process (killed after ``timeout`` s): {"early_compile": "done" or why not, its wait}."""
        start = time.perf_counter()
        try:
            code = self.process.wait(timeout)
            outcome = "done" if code == 0 else f"failed (exit {code}): {self._tail()[-600:]}"
            parts = _last_json(self._tail()) if code == 0 else {}
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            outcome, parts = f"stopped after waiting {timeout:.0f} s", {}
        finally:
            self._log.close()
        return {"early_compile": outcome, "early_compile_wait_s": time.perf_counter() - start,
                "early_compile_total_s": time.perf_counter() - self.started,
                **{f"early_compile_{k}": v for k, v in parts.items()}}

    def cancel(self) -> None:
        """Stop it (the load failed)."""
        self.process.kill()
        self.process.wait()
        self._log.close()

    def _tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()


def stand_in(path: str | Path, device: str, dtype: Any, cache_tokens: int) -> Any:
    """A CompactDecoder of the model's shapes with one layer and random weights, built as the load builds the real
    one (transformers' language model class from the checkpoint's config, then ``build_from``), so its compiled
    graphs are keyed as the real one's."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModel

    from .decoder import build_from

    text_config = AutoConfig.from_pretrained(path).get_text_config()
    text_config.num_hidden_layers = 1
    tokens = min(cache_tokens, getattr(text_config, "max_position_embeddings", None) or cache_tokens)
    with torch.device(device):
        language_model = AutoModel.from_config(text_config, dtype=dtype).eval()
        lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False, dtype=dtype)
    lm_head.weight = language_model.embed_tokens.weight  # only its shape matters: no second copy
    return build_from(language_model, lm_head, text_config, max_tokens=tokens)


@contextlib.contextmanager
def compiling_in_process() -> Iterator[None]:
    """torch.compile's kernels built in this process one after another, not in inductor's worker pool: a cold
    warm-up took 12.4 s that way against 14.0 s with the pool on one H100 host, 13.8 against 15.7 s on another
    (bench/results/fast_warmup-h100-qwen2.5-vl-3b-*): the pool's start-up and hand-offs cost more than parallel
    builds of a few dozen small kernels save. Only around our warm-up; TORCHINDUCTOR_COMPILE_THREADS, where set,
    is left to decide. (Both processes use it: the setting is part of what the compiled graphs are keyed on.)"""
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ:
        yield
        return
    from torch._inductor import config

    with config.patch(compile_threads=1):
        yield


def warm_decoder(decoder: Any, device: str, compile_step: bool) -> tuple[Any, Any]:
    """The decoder's part of the warm-up at load, any compiling included: (the prompt's CUDA graphs, one per
    length bucket, or None: off CUDA or with OPTASCAN_FAST_PREFILL_GRAPHS=0, prompts run eagerly; the decode loop,
    whose graphs are captured here)."""
    import torch

    from .graphs import DecodeLoop
    from .prefill import PrefillGraphs

    prefill_graphs = None
    if device.startswith("cuda") and os.environ.get("OPTASCAN_FAST_PREFILL_GRAPHS") != "0":
        prefill_graphs = PrefillGraphs(decoder, device)
    elif compile_step:  # a 16-token prompt of zeros compiles the prompt's code (the next prompt overwrites its slots)
        with torch.inference_mode():
            embeds = torch.zeros(1, 16, decoder.embed.weight.shape[1], dtype=decoder.k_cache.dtype,
                                 device=decoder.k_cache.device)
            decoder(embeds, 0, *decoder.rotary(decoder.prompt_positions(16)))
    return prefill_graphs, DecodeLoop(decoder, device)


def _last_json(log: str) -> dict[str, Any]:
    lines = [line for line in log.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def main(argv: list[str]) -> None:
    """Build the stand-in and warm it up; the last line printed says when each part ended (seconds since the
    launch), for the warm-up report."""
    spec = json.loads(argv[0])
    marks = {"started_s": time.time() - spec["started"]}
    import torch
    import transformers  # noqa: F401  (its import, timed here, is a good part of this process's start)

    marks["imported_s"] = time.time() - spec["started"]

    decoder = stand_in(spec["path"], spec["device"], getattr(torch, spec["dtype"]), spec["cache_tokens"])
    marks["built_s"] = time.time() - spec["started"]
    decoder.compile_layers()
    with compiling_in_process():
        prefill_graphs, decode_loop = warm_decoder(decoder, spec["device"], compile_step=True)
    marks["warmed_s"] = time.time() - spec["started"]
    parts = {**getattr(prefill_graphs, "warmup_parts", {}), **decode_loop.warmup_parts}
    print(json.dumps({**marks, **{f"warm_{k}": v for k, v in parts.items()}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
