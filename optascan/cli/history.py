"""``optascan history [list|search TEXT|show ID|rm ID|export]``: past scans, from the local database."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from ..errors import InvalidRequest


def add_parser(commands: Any, name: str) -> None:
    p = commands.add_parser(name, help="list, search, show, delete or export past scans",
                            description="Past scans are kept in a SQLite database in your data directory "
                                        "($XDG_DATA_HOME/optascan/history.sqlite3).")
    p.add_argument("action", nargs="?", default="list", choices=("list", "search", "show", "rm", "export"))
    p.add_argument("arg", nargs="?", help="search text, or a scan id for show / rm")
    p.add_argument("--limit", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    from ..flow.history import History

    history = History()
    try:
        if args.action in ("search", "show", "rm") and not args.arg:
            raise InvalidRequest(f"'history {args.action}' needs {'text' if args.action == 'search' else 'a scan id'}")
        if args.action == "export":
            print(history.export())
        elif args.action == "show":
            scan = history.show(args.arg)
            if scan is None:
                raise InvalidRequest(f"no scan {args.arg!r}", hint="see 'optascan history'")
            print(json.dumps(scan.to_dict(with_thumbnail=True), indent=2, ensure_ascii=False))
        elif args.action == "rm":
            if not history.delete(args.arg):
                raise InvalidRequest(f"no scan {args.arg!r}", hint="see 'optascan history'")
            print(f"deleted {args.arg}")
        else:
            scans = history.search(args.arg, args.limit) if args.action == "search" else history.list(args.limit)
            for scan in scans:
                when = datetime.datetime.fromtimestamp(scan.created).strftime("%Y-%m-%d %H:%M")
                title = scan.result.get("title", "")
                print(f"{scan.id}  {when}  {scan.depth:<8}  {scan.goal[:40]:<40}  {title[:40]}")
            if not scans:
                print("no scans" if args.action == "list" else "nothing found")
    finally:
        history.close()
    return 0
