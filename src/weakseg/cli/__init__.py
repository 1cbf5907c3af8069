"""The ``weakseg`` command line: ``weakseg <command> [options]``.

Each command lives in its own module of this package and exposes
``add_parser(subparsers) -> argparse.ArgumentParser``, which registers the command and sets
``func(args) -> int`` as its entry point. Modules are imported only when listed here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from weakseg import __version__
from weakseg.errors import WeaksegError

# Module name (inside weakseg.cli) for each command, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "bench",
    "scribbles",
    "data",
    "segment",
    "train",
    "eval",
    "predict",
    "viz",
    "proposals",
    "experiment",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="weakseg",
        description="Weakly-supervised segmentation with regularized losses.",
    )
    parser.add_argument("--version", action="version", version=f"weakseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (for bug reports)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"weakseg.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``weakseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WeaksegError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
