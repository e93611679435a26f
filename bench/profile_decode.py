"""Where does per-token time go? Plain generate vs our backend adapters vs the whole engine (worker thread).

    PYTHONPATH=. python3 bench/profile_decode.py --device cuda [--profile]

A diagnostic, not a result: prints ms/token of the three paths for a tiny and a small checkpoint, and with
``--profile`` the top functions of the backend path under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import optascan
from optascan.engine.backends.base import Sampling
from optascan.engine.cancel import CancelToken
from optascan.engine.conversation import to_conversation
from optascan.testing.tiny import build_tiny_checkpoint


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    for family, size in (("llama_text", "tiny"), ("llava", "tiny"), ("llava", "small")):
        profile_model(build_tiny_checkpoint(family, root / f"{family}-{size}", text_size=size), f"{family}/{size}",
                      args)


def profile_model(path: Path, label: str, args: argparse.Namespace) -> None:
    engine = optascan.load(path, device=args.device)
    backend = engine.backend
    images = [Image.new("RGB", (448, 336), (200, 30, 30))] if backend.supports_images else []
    request = optascan.Request(prompt="Describe the photo.", images=images, max_tokens=args.tokens,
                               ignore_eos=True, seed=0)
    prepared = backend.prepare(to_conversation(request), images)
    sampling = Sampling(max_tokens=args.tokens, ignore_eos=True)
    n = args.tokens

    def plain():
        with torch.inference_mode():
            backend.model.generate(**prepared.inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def adapters():
        backend.generate(prepared, sampling, CancelToken(), lambda token_id: True)

    def whole_engine():
        engine.generate(request)

    rows = {name: timed(fn, args.device, args.reps) / n * 1000
            for name, fn in (("plain generate", plain), ("backend adapters", adapters),
                             ("engine", whole_engine))}
    print(f"{label} on {backend.device}: " + ", ".join(f"{k} {v:.2f} ms/token" for k, v in rows.items()),
          flush=True)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(adapters)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    engine.close()


if __name__ == "__main__":
    main()
