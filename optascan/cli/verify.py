"""``optascan verify NAME``: re-hash an installed model's files, offline."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import IntegrityError


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="check a downloaded model's files against their hashes",
                            description="Re-hash every file of a downloaded model and compare it with the hash "
                                        "it is stored under (no network needed).")
    p.add_argument("model", help="catalog name or hub repo id")


def run(args: argparse.Namespace) -> int:
    from ..models.integrity import verify_snapshot
    from ..models.store import find_installed

    found = find_installed(args.model)
    report = verify_snapshot(found.path)
    if not report.ok:
        raise IntegrityError(f"{len(report.bad)} of {report.files} files are damaged: {', '.join(report.bad)}",
                             hint=f"optascan rm {args.model} && optascan pull {args.model}")
    print(f"{found.repo_id}: {report.files} files OK ({found.path})")
    return 0
