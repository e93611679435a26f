"""How fast the shipped demo model answers, through optascan and through plain transformers, side by side.

    python bench/demo_latency.py [--scenes 40] [--out bench/results/demo_latency-<date>.json]

Asks every question of held-out eval scenes (``optascan.demo.eval``: plain PNGs, EXIF-rotated JPEGs and 4000 px
JPEGs) once through ``engine.generate`` and once through AutoProcessor + ``model.generate`` on the same bytes,
alternating the order. Records the answer latency (image bytes in → answer out), TTFT, accuracy of both, the
load time, and the wall time of the README's first command (`optascan scan ...`: start, import, load, answer).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import PIL
import torch
import transformers
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.provenance import ROOT, git_commit  # noqa: E402
from optascan.demo.eval import VARIANTS, variant_bytes  # noqa: E402
from optascan.demo.scenes import sample  # noqa: E402
from optascan.models.resolve import DEMO_DIR  # noqa: E402


class PlainTransformers:
    """The baseline a user would write: the processor's chat template and resize, greedy ``generate``."""

    def __init__(self) -> None:
        self.processor = transformers.AutoProcessor.from_pretrained(DEMO_DIR)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(DEMO_DIR, dtype=torch.float32).eval()

    def ask(self, data: bytes, question: str) -> str:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=[image], text=prompt, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50_ms": statistics.median(ordered) * 1000, "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000,
            "max_ms": ordered[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    engine = optascan.load("demo", device="cpu")
    load_s = time.perf_counter() - start
    plain = PlainTransformers()
    latency: dict[str, list[float]] = {"optascan": [], "plain_transformers": []}
    right: dict[str, list[bool]] = {"optascan": [], "plain_transformers": []}
    ttft = []
    for seed in range(args.scenes):
        image, _, questions = sample(seed)
        data = variant_bytes(image, VARIANTS[seed % len(VARIANTS)], seed)
        for i, q in enumerate(questions):
            def ours(question=q.text, data=data) -> str:
                result = engine.generate(prompt=question, images=[data], max_tokens=8)
                ttft.append(result.timings.ttft_s)
                return result.text

            def baseline(question=q.text, data=data) -> str:
                return plain.ask(data, question)

            runs = [("optascan", ours), ("plain_transformers", baseline)]
            for name, ask in runs if i % 2 == 0 else runs[::-1]:
                t = time.perf_counter()
                answer = ask()
                latency[name].append(time.perf_counter() - t)
                right[name].append(answer.strip() == q.answer)
    engine.close()
    cli = []
    for _ in range(3):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "optascan", "scan", "examples/shapes.jpg",
                               "How many red circles are there?"], capture_output=True, text=True, cwd=ROOT)
        cli.append({"wall_s": time.perf_counter() - t, "answer": done.stdout.strip()})
    now = datetime.datetime.now(datetime.UTC)
    stats = {name: percentiles(v) for name, v in latency.items()}
    report = {
        "benchmark": "demo_latency",
        "date": now.isoformat(timespec="seconds"),
        **git_commit(),
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), torch threads "
                  f"{torch.get_num_threads()}",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "pillow": PIL.__version__,
                     "optascan": optascan.__version__},
        "questions": len(latency["optascan"]),
        "load_s": load_s,
        "answer_latency": stats,
        "optascan_ttft": percentiles(ttft),
        "ratio_p50_optascan_over_plain": stats["optascan"]["p50_ms"] / stats["plain_transformers"]["p50_ms"],
        "accuracy": {name: sum(v) / len(v) for name, v in right.items()},
        "readme_command": cli,
        "targets": {"answer_after_load_ms_max": 1000},
    }
    out = Path(args.out or ROOT / f"bench/results/demo_latency-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("questions", "load_s", "answer_latency", "optascan_ttft",
                                             "ratio_p50_optascan_over_plain", "accuracy")}, indent=1))
    print(f"README command: {[round(c['wall_s'], 2) for c in cli]} s, answers {[c['answer'] for c in cli]}; "
          f"wrote {out}")


if __name__ == "__main__":
    main()
