"""What the HTTP server adds over a direct library call, and how it holds 64 concurrent clients.

    python bench/server_overhead.py [--runs 30] [--clients 64] [--out bench/results/server_overhead-<date>.json]

Same request both ways (the demo model, examples/shapes.jpg as a data: URL, "What colour is the star?",
greedy): the library's ``engine.generate`` in this process, and a streamed /v1/chat/completions to
``optascan serve`` in its own process on 127.0.0.1 (the official openai client). Alternating, medians of
``--runs``. TTFT is measured by the caller in both cases (request sent → first token). Then ``--clients``
clients at once, each one streamed request: all must succeed; the report has their latency (p50, p95, p99,
max) and the queue's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optascan  # noqa: E402
from bench.provenance import ROOT, git_commit  # noqa: E402
from optascan.testing.live_server import free_port  # noqa: E402

QUESTION = "What colour is the star?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    image = (ROOT / "examples/shapes.jpg").read_bytes()
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": QUESTION}]}]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "optascan", "serve", "--port", str(port),
                               "--max-queue", str(args.clients)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        engine = optascan.load("demo", device="cpu")

        def direct() -> tuple[float, float, str]:
            start = time.perf_counter()
            first = None
            text = ""
            for event in engine.stream(messages=messages, temperature=0):
                if event.delta and first is None:
                    first = time.perf_counter()
                text += event.delta
            return first - start, time.perf_counter() - start, text

        def served() -> tuple[float, float, str]:
            start = time.perf_counter()
            first = None
            text = ""
            for chunk in client.chat.completions.create(model="demo", messages=messages, temperature=0, stream=True):
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta and first is None:
                    first = time.perf_counter()
                text += delta or ""
            return first - start, time.perf_counter() - start, text

        direct(), served()  # warm both paths (model load in the server, first-call costs here)
        runs: dict[str, list[tuple[float, float, str]]] = {"library": [], "server": []}
        for i in range(args.runs):
            for name, fn in ((("library", direct), ("server", served)) if i % 2 == 0
                             else (("server", served), ("library", direct))):
                runs[name].append(fn())
        engine.close()
        concurrent = asyncio.run(many(base, messages, args.clients))
    finally:
        server.terminate()
        server.wait(timeout=30)
    ttft = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    total = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    answers = {k: sorted({r[2] for r in v}) for k, v in runs.items()}
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "server_overhead", "date": now.isoformat(timespec="seconds"), **git_commit(),
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
        "versions": {"python": platform.python_version(), "openai": openai.__version__, "httpx": httpx.__version__,
                     "optascan": optascan.__version__},
        "request": {"model": "demo", "image": "examples/shapes.jpg", "question": QUESTION}, "runs": args.runs,
        "ttft_median_ms": {k: v * 1000 for k, v in ttft.items()},
        "total_median_ms": {k: v * 1000 for k, v in total.items()},
        "ttft_added_ms": (ttft["server"] - ttft["library"]) * 1000,
        "total_added_ms": (total["server"] - total["library"]) * 1000,
        "answers": answers, "concurrent": concurrent,
    }
    out = Path(args.out or ROOT / f"bench/results/server_overhead-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("ttft_median_ms", "total_median_ms", "ttft_added_ms", "total_added_ms",
                                             "answers", "concurrent")}, indent=1))


async def many(base: str, messages: list, clients: int) -> dict:
    body = {"model": "demo", "messages": messages, "temperature": 0, "stream": True}

    async def one(http: httpx.AsyncClient) -> tuple[float, int, str]:
        start = time.perf_counter()
        text = ""
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk.get("choices"):
                        text += chunk["choices"][0]["delta"].get("content") or ""
            return time.perf_counter() - start, response.status_code, text

    async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    return {"clients": clients, "ok": sum(1 for r in results if r[1] == 200),
            "answers": sorted({r[2] for r in results}),
            "wall_s": wall, "requests_per_s": clients / wall,
            "latency_ms": {"p50": latencies[len(latencies) // 2] * 1000,
                           "p95": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
                           "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000, "max": latencies[-1] * 1000}}


if __name__ == "__main__":
    main()
