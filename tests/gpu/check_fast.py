"""GPU tier for issue #9 (the fast engine), run through the device tool. Writes JSON, exits 1 on failure.

    PYTHONPATH=. python3 tests/gpu/check_fast.py --out "$OUT/fast_checks.json"
    python3 tests/gpu/check_fast.py --device cpu --out /tmp/fast_checks.json          # the same logic, here

Checks, on every family the fast engine supports (tiny checkpoints, bf16 on CUDA): greedy tokens equal to the
transformers engine for 64 tokens (or the first divergence recorded: bf16 ties); the captured-graph loop stops at
EOS without leaking the extra step (the demo model's answers); cancel within one step; warm-up ≤ 15 s at load.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
from pathlib import Path

from PIL import Image
from report import run_checks

import optascan
from optascan.testing.tiny import build_tiny_checkpoint

ROOT = Path(tempfile.mkdtemp(prefix="optascan-fast-"))
FAMILIES = ("llava", "qwen2_vl", "idefics3", "llama_text")
PHOTO = Image.new("RGB", (640, 480), (200, 60, 30))


def check_greedy_matches_transformers(record, device):
    for family in FAMILIES:
        path = build_tiny_checkpoint(family, ROOT / family, text_size="small")
        images = [] if family == "llama_text" else [PHOTO]
        request = dict(prompt="Describe the picture.", images=images, max_tokens=64, ignore_eos=True)
        with optascan.load(path, device=device, engine="hf") as hf:
            expected = hf.generate(**request).text
        with optascan.load(path, device=device, engine="fast") as fast:
            got = fast.generate(**request).text
            record[f"{family}_warmup_s"] = fast.backend.warmup_s
            assert fast.backend.warmup_s <= 15
        same = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                    min(len(expected), len(got)))
        record[f"{family}_equal_chars"] = same
        record[f"{family}_equal"] = expected == got
    assert all(record[f"{f}_equal"] for f in FAMILIES), record


def check_demo_answers_stop_at_eos(record, device):
    from optascan.demo.eval import run_eval

    with optascan.load("demo", device=device, engine="fast") as fast:
        report = run_eval(lambda image, q: fast.generate(prompt=q, images=[image], max_tokens=8).text, scenes=30)
    record["accuracy"] = report["accuracy"]
    assert min(report["accuracy"].values()) >= 0.9


def check_cancel_within_one_step(record, device):
    path = build_tiny_checkpoint("qwen2_vl", ROOT / "cancel", text_size="small")
    with optascan.load(path, device=device, engine="fast") as fast:
        token = optascan.CancelToken()
        counts = []

        def on_event(event):
            counts.append(event.tokens)
            if event.tokens == 20:
                threading.Thread(target=token.cancel).start()

        result = fast.generate(prompt="go", max_tokens=5000, ignore_eos=True, cancel=token, on_event=on_event)
    record["tokens_at_cancel"] = result.usage.completion_tokens
    assert result.finish_reason.value == "cancelled" and result.usage.completion_tokens <= 23


CHECKS = [check_greedy_matches_transformers, check_demo_answers_stop_at_eos, check_cancel_within_one_step]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="tests/gpu/results/fast_checks.json")
    args = parser.parse_args()
    return run_checks([functools.partial(check, device=args.device) for check in CHECKS], args.out, args.device)


if __name__ == "__main__":
    raise SystemExit(main())
