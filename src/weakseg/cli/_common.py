"""Argument helpers shared by the command modules of :mod:`weakseg.cli` (standard library only,
so that ``--help`` stays light)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_command", "add_set_option", "add_subcommands", "log_data_to_stderr"]


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, doc: str | None
) -> argparse.ArgumentParser:
    """Register command ``name``: ``summary`` in its parent's ``--help``, ``doc`` (a module
    docstring, its layout kept) as its own ``--help`` text."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_subcommands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """The subcommands of ``parser`` (their name in ``args.<dest>``); the command alone prints
    its help and exits with status 2."""
    commands = parser.add_subparsers(dest=dest, metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    return commands


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def log_data_to_stderr() -> None:
    """Show the data loaders' log (the bad samples ``--skip-bad`` skips) on stderr."""
    logger = logging.getLogger("weakseg.data")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
