"""``optascan rm NAME`` / ``optascan rm --all``: delete models from the Hugging Face cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import InvalidRequest


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="delete downloaded models",
                            description="Delete a model (all its revisions) from the Hugging Face cache.")
    p.add_argument("model", nargs="?", help="catalog name or hub repo id")
    p.add_argument("--all", action="store_true", help="delete every downloaded model (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")


def run(args: argparse.Namespace) -> int:
    from ..models.store import delete_installed, find_installed, installed_models

    if bool(args.model) == bool(args.all):
        raise InvalidRequest("name one model, or pass --all", hint="optascan rm NAME  |  optascan rm --all")
    if args.all:
        targets = installed_models()
        if not targets:
            print("nothing to delete")
            return 0
        if not args.yes:
            names = ", ".join(m.repo_id for m in targets)
            answer = input(f"delete {len(targets)} models ({names})? [y/N] ") if sys.stdin.isatty() else ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
    else:
        targets = [find_installed(args.model)]
    for model in targets:
        delete_installed(model)
        print(f"deleted {model.repo_id}")
    print(f"freed {sum(m.size_on_disk for m in targets) / 1000**2:,.1f} MB")
    return 0
