"""The ``weakseg`` command line: ``weakseg <command> [options]``.

Each command lives in its own module of this package and exposes
``add_parser(subparsers) -> argparse.ArgumentParser``, which registers the command and sets
``func(args) -> int`` as its entry point. Only the module of the command given is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from weakseg import __version__
from weakseg.errors import WeaksegError

# Each command: its module (inside weakseg.cli) and its line in ``weakseg --help``, in the order
# ``--help`` lists them. Only the module of the command given is imported (``--help`` imports
# none), and command modules import torch and the library only inside their ``func``, so
# that ``weakseg --help`` and ``weakseg COMMAND --help`` answer without importing torch.
COMMANDS: dict[str, str] = {
    "demo": "train pCE / + dense CRF / + kernel cut / full masks on synthetic data, compare",
    "bench": "benchmark the Gaussian filtering engine on generated images",
    "scribbles": "convert, simulate, shorten scribbles; dataset statistics",
    "data": "dataset tools: check a folder dataset",
    "segment": "segment one image or volume from scribbles (no network)",
    "train": "train a network (pCE + regularized losses) from a YAML config",
    "eval": "evaluate a checkpoint: mIoU, IoU, pixel accuracy, Dice",
    "predict": "segment images with a checkpoint: palette masks and overlays",
    "viz": "figures: regularizer gradients dR/dS (Fig. 1), loss curves of runs",
    "proposals": "proposal baselines: one-time GrabCut masks from scribbles",
    "experiment": "run a recipe of the paper's tables (train + eval each run, write results.md)",
}
COMMAND_MODULES: tuple[str, ...] = tuple(COMMANDS)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first argument that is not an option), if any."""
    for argument in argv:
        if not argument.startswith("-"):
            return argument if argument in COMMANDS else None
    return None


def build_parser(
    command: str | None = None, *, every_command: bool = False
) -> argparse.ArgumentParser:
    """The top-level parser: ``command``'s full sub-parser (or every one's with
    ``every_command``), the others as one-line entries for ``--help``."""
    parser = argparse.ArgumentParser(
        prog="weakseg",
        description="Weakly-supervised segmentation with regularized losses.",
    )
    parser.add_argument("--version", action="version", version=f"weakseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (for bug reports)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if every_command or name == command:
            importlib.import_module(f"weakseg.cli.{name}").add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``weakseg`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
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
