"""``weakseg bench``: time the filtering engine on generated data (placeholder until lattice)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmark the Gaussian filtering engine")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return 0
