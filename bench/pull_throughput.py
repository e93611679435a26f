"""Benchmark: pull throughput of `optascan.models.pull` vs plain `huggingface_hub.snapshot_download`.

Same local hub-compatible server (optascan.testing.hub_server), same ~1 GB synthetic model, fresh cache each
run, runs alternated, medians. Our pull also verifies sha256 (the plain client checks sizes only).
Target: ≥ 0.95× the plain client's throughput.

    python bench/pull_throughput.py [--size-mb 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants, snapshot_download
from provenance import git_commit

import optascan
from optascan.models.pull import pull
from optascan.testing.hub_server import HubServer

REPO = "bench-org/synthetic-1gb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        (source / "config.json").write_text('{"model_type": "llava"}')
        with open(source / "model.safetensors", "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1000 * 1000))
        total = sum(p.stat().st_size for p in source.iterdir())
        with HubServer({REPO: source}) as server:
            os.environ["HF_HUB_OFFLINE"] = "0"
            os.environ.pop("OPTASCAN_OFFLINE", None)
            constants.ENDPOINT = server.url
            constants.HUGGINGFACE_CO_URL_TEMPLATE = server.url + "/{repo_id}/resolve/{revision}/{filename}"
            constants.HF_HUB_OFFLINE = False
            _ = [blob.sha256 for blob in server.files(REPO).values()]  # hash once, outside the timings
            times: dict[str, list[float]] = {"optascan": [], "snapshot_download": []}
            for run in range(args.runs):
                order = ["optascan", "snapshot_download"] if run % 2 == 0 else ["snapshot_download", "optascan"]
                for name in order:
                    cache = Path(tmp) / f"cache-{name}-{run}"
                    start = time.perf_counter()
                    if name == "optascan":
                        pull(REPO, cache_dir=cache)
                    else:
                        snapshot_download(REPO, cache_dir=cache)
                    times[name].append(time.perf_counter() - start)
                    shutil.rmtree(cache)
    median = {k: statistics.median(v) for k, v in times.items()}
    throughput = {k: total / v / 1e6 for k, v in median.items()}
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "pull_throughput", "date": now.isoformat(timespec="seconds"), **git_commit(),
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), server on 127.0.0.1",
        "versions": {"python": platform.python_version(), "huggingface_hub": huggingface_hub.__version__,
                     "optascan": optascan.__version__},
        "bytes": total, "runs": args.runs, "median_s": median, "all_s": times, "throughput_mb_s": throughput,
        "ratio": throughput["optascan"] / throughput["snapshot_download"], "target_ratio_min": 0.95,
        "note": "optascan verifies sha256 of LFS files; snapshot_download checks sizes only",
    }
    out = Path(args.out or f"bench/results/pull_throughput-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{total / 1e6:.0f} MB: optascan {throughput['optascan']:.0f} MB/s, snapshot_download "
          f"{throughput['snapshot_download']:.0f} MB/s, ratio {report['ratio']:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
