"""GPU tier: the engine on CUDA, run through the device tool (CI has no GPU). Writes JSON, exits 1 on failure.

    PYTHONPATH=. python3 tests/gpu/check_cuda.py --out "$OUT/cuda_checks.json"

Needs only torch, transformers, Pillow and numpy. Each check is a function; a failed assertion is
recorded with its message and the run goes on, so one call of the device tool reports everything.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
from pathlib import Path

import torch
from PIL import Image
from report import run_checks

import optascan
from optascan import CancelToken, FinishReason, Request
from optascan.testing.tiny import build_tiny_checkpoint

FAMILIES = ["llava", "qwen2_vl", "idefics3", "llama_text"]
ROOT = Path(tempfile.mkdtemp(prefix="optascan-gpu-"))


def photo(size=(640, 480)) -> Image.Image:
    image = Image.new("RGB", size, (230, 230, 230))
    image.paste(Image.new("RGB", (size[0] // 3, size[1] // 3), (200, 30, 30)), (20, 20))
    return image


def request(family: str, **kw) -> Request:
    images = [photo()] if family != "llama_text" else []
    return Request(prompt="What is in the photo?", images=images, **kw)


def engine_for(family: str, **kw) -> optascan.Engine:
    return optascan.load(build_tiny_checkpoint(family, ROOT / family), device="cuda", **kw)


def check_every_family_generates_on_cuda(record):
    for family in FAMILIES:
        with engine_for(family) as engine:
            assert engine.info.device.startswith("cuda") and engine.info.dtype == "bfloat16", engine.info
            result = engine.generate(request(family, max_tokens=32, ignore_eos=True, seed=0))
            assert result.usage.completion_tokens == 32, result.usage
            assert (result.usage.image_tokens > 0) == (family != "llama_text"), result.usage
            record[family] = {"usage": vars(result.usage), "timings": vars(result.timings)}


def check_same_seed_same_text_on_every_path(record):
    with engine_for("qwen2_vl") as engine:
        req = request("qwen2_vl", max_tokens=48, temperature=0.9, top_p=0.9, top_k=40, seed=5, ignore_eos=True)
        streamed = "".join(e.delta for e in engine.stream(req))
        blocking = engine.generate(req).text

        async def both():
            text = "".join([e.delta async for e in engine.astream(req)])
            return text, (await engine.agenerate(req)).text

        async_streamed, awaited = asyncio.run(both())
        assert streamed == blocking == async_streamed == awaited
        record["text_chars"] = len(streamed)


def check_cancel_from_another_thread_within_one_step(record):
    with engine_for("llava") as engine:
        steps, at_cancel, token = [0], [], CancelToken()
        handle = engine.backend.language_model.register_forward_pre_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))

        def watch(event):
            if event.tokens == 20 and not at_cancel:
                t = threading.Thread(target=lambda: (at_cancel.append(steps[0]), token.cancel()))
                t.start()
                t.join()

        result = engine.generate(request("llava", max_tokens=100_000, ignore_eos=True), cancel=token,
                                 on_event=watch)
        handle.remove()
        assert result.finish_reason is FinishReason.CANCELLED
        latency = steps[0] - at_cancel[0]
        assert latency <= 1, latency
        record.update(cancel_latency_steps=latency, completion_tokens=result.usage.completion_tokens)


def check_cache_is_trimmed_after_each_generation(record):
    with engine_for("qwen2_vl") as engine:
        device = torch.device(engine.info.device)
        limit = engine.backend.cache_limit
        # a big image and many tokens leave the caching allocator holding freed blocks
        engine.generate(Request(prompt="x", images=[photo((1920, 1440))], max_tokens=256, ignore_eos=True))
        free_cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        assert free_cached <= limit, (free_cached, limit)
        record.update(cache_limit_bytes=limit, cached_free_after_bytes=free_cached,
                      allocated_after_bytes=torch.cuda.memory_allocated(device))


def check_real_out_of_memory_is_recoverable(record):
    path = build_tiny_checkpoint("llava", ROOT / "llava-small", text_size="small")
    with optascan.load(path, device="cuda") as engine:
        device = torch.device(engine.info.device)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        # Cap the allocator at what it holds now plus 1 MiB: a 3,000-token prefill (megabytes of
        # activations) then truly runs out of device memory.
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved(device) + 2**20) / total, device)
        long_prompt = "Describe every detail of the photo, please. " * 300
        try:
            engine.generate(Request(prompt=long_prompt, images=[photo()], max_tokens=8))
            raise AssertionError("expected OutOfMemory")
        except optascan.OutOfMemory as err:
            assert err.recoverable and err.requested_bytes, err.to_dict()
            record["error"] = err.to_dict()
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        again = engine.generate(Request(prompt=long_prompt, images=[photo()], max_tokens=8, ignore_eos=True))
        assert again.usage.completion_tokens == 8
        record.update(served_after_oom=True, prompt_tokens=again.usage.prompt_tokens)


CHECKS = [check_every_family_generates_on_cuda, check_same_seed_same_text_on_every_path,
          check_cancel_from_another_thread_within_one_step, check_cache_is_trimmed_after_each_generation,
          check_real_out_of_memory_is_recoverable]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="tests/gpu/results/cuda_checks.json")
    args = parser.parse_args()
    return run_checks(CHECKS, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
