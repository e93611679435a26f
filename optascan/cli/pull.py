"""``optascan pull NAME [--revision R]``: download a model into the Hugging Face cache, with a progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..models.plan import Phase, PullEvent


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="download a model (resumable, verified)",
                            description="Download a catalog model or any hub repo id into the standard Hugging Face "
                                        "cache. Checks free disk (+20 %%) first, verifies every file, and resumes "
                                        "from what is on disk if interrupted (Ctrl-C or a crash).")
    p.add_argument("model", help="catalog name (see 'optascan models') or hub repo id 'org/name'")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")


def run(args: argparse.Namespace) -> int:
    from ..models.pull import pull

    bar = ProgressBar(sys.stderr)
    try:
        result = pull(args.model, revision=args.revision, on_event=bar.show)
    except KeyboardInterrupt:
        bar.finish()
        print("optascan: pull interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    bar.finish()
    print(f"{result.repo_id}@{result.commit[:12]} → {result.path}")
    return 0


class ProgressBar:
    """bytes, %, speed and ETA on one line; it only ever moves forward because the events do."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.tty, self.last = stream, stream.isatty(), 0.0

    def show(self, event: PullEvent) -> None:
        now = time.monotonic()
        if event.phase is Phase.DOWNLOADING and now - self.last < 0.1:
            return
        self.last = now
        parts = [f"{event.phase.value:<11}", f"{_mb(event.bytes)}/{_mb(event.total)}", f"{event.fraction:6.1%}"]
        if event.bytes_per_s:
            parts.append(f"{_mb(event.bytes_per_s)}/s")
        if event.eta_s is not None and event.phase is Phase.DOWNLOADING:
            parts.append(f"ETA {event.eta_s:4.0f} s")
        line = "  ".join(parts)
        self.stream.write(("\r\x1b[2K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _mb(n: float) -> str:
    return f"{n / 1000**2:,.1f} MB"
