"""``weakseg bench``: time the Gaussian filtering engine on generated images.

Measures what a regularized loss pays per batch: building a :class:`PermutohedralLattice` on the
RGBXY features and filtering K channels of softmax-like values with it, at the sizes for which
DESIGN.md records the original C++ implementation's times, plus the exact filter at a small size
and the lattice's accuracy against it. ``benchmarks/filtering.py`` runs the same measurement.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from weakseg.cli._common import add_command

# Image size and batch of the cases DESIGN.md records the original C++ implementation's times for.
DEFAULT_CASES: tuple[tuple[int, int], ...] = ((321, 1), (321, 4), (512, 1), (512, 4))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``weakseg bench``."""
    summary = "benchmark the Gaussian filtering engine on generated images"
    parser = add_command(subparsers, "bench", summary, __doc__)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=[f"{s}x{b}" for s, b in DEFAULT_CASES],
        metavar="SIZExBATCH",
        help="image size and batch, e.g. 321x1 (default: %(default)s)",
    )
    parser.add_argument("--classes", type=int, default=21, help="channels K (default: %(default)s)")
    parser.add_argument("--sigma-rgb", type=float, default=15.0)
    parser.add_argument("--sigma-xy", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N (default: %(default)s)")
    parser.add_argument("--exact-size", type=int, default=64, help="size for the exact filter")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:N")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (:func:`weakseg.cli._bench.run`); imported here, not at parse time."""
    from weakseg.cli import _bench

    return _bench.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as a script (``benchmarks/filtering.py``)."""
    parser = argparse.ArgumentParser(prog="benchmarks/filtering.py")
    subparsers = parser.add_subparsers()
    add_parser(subparsers)
    args = parser.parse_args(["bench", *(argv or [])])
    return run(args)


def __getattr__(name: str) -> Any:
    # the benchmarks' scripts import synthetic_image / softmax_values from here
    if name in ("synthetic_image", "softmax_values"):
        from weakseg.cli import _bench

        return getattr(_bench, name)
    raise AttributeError(f"module 'weakseg.cli.bench' has no attribute {name!r}")
