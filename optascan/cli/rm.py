"""``optascan rm NAME`` / ``optascan rm --all``: delete models from the Hugging Face cache."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from ..errors import InvalidRequest, ModelNotFound


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="delete downloaded models",
                            description="Delete a model (all its revisions) from the Hugging Face cache.")
    p.add_argument("model", nargs="?", help="catalog name or hub repo id")
    p.add_argument("--all", action="store_true", help="delete every downloaded model (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")


def run(args: argparse.Namespace) -> int:
    from huggingface_hub import constants

    from ..models.pull import repo_for
    from ..models.store import installed_models

    if bool(args.model) == bool(args.all):
        raise InvalidRequest("name one model, or pass --all", hint="optascan rm NAME  |  optascan rm --all")
    installed = installed_models()
    if args.all:
        targets = [m.repo_id for m in installed]
        if not targets:
            print("nothing to delete")
            return 0
        if not args.yes:
            answer = input(f"delete {len(targets)} models ({', '.join(targets)})? [y/N] ") if sys.stdin.isatty() else ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
    else:
        repo_id = repo_for(args.model)
        if repo_id not in {m.repo_id for m in installed}:
            raise ModelNotFound(f"{args.model!r} is not downloaded", hint="see 'optascan models'")
        targets = [repo_id]
    cache = constants.HF_HUB_CACHE
    freed = 0
    for repo_id in targets:
        folder = f"models--{repo_id.replace('/', '--')}"
        freed += next(m.size_on_disk for m in installed if m.repo_id == repo_id)
        shutil.rmtree(f"{cache}/{folder}")
        shutil.rmtree(f"{cache}/.locks/{folder}", ignore_errors=True)
        print(f"deleted {repo_id}")
    print(f"freed {freed / 1000**2:,.1f} MB")
    return 0
