"""``optascan`` entry point: parse, dispatch to a command module, turn errors into one clear line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import OptascanError
from . import history, models, optimize, pull, rm, scan, serve, status, verify

COMMANDS = {"scan": scan, "optimize": optimize, "models": models, "pull": pull, "rm": rm, "verify": verify,
            "status": status, "history": history, "serve": serve}
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optascan",
        description="Private, local vision-language inference: ask a local model about a photo.",
        epilog="Run 'optascan COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"optascan {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(commands, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Third-party progress bars and warnings would interleave with the streamed answer.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except OptascanError as err:
        print(f"optascan: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside a generation (e.g. while loading)
        print("\noptascan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`optascan models | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
