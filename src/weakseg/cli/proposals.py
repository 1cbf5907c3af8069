"""``weakseg proposals grabcut``: one-time GrabCut proposals, the baseline of Table 2.

Writes one full mask per training image, ``DIR/<id>.png`` (class ids; the folder-dataset label
format), by one-vs-rest GrabCut from its scribbles (:func:`weakseg.proposals.grabcut_proposal`).
Train on them with ``supervision: full`` and ``label_dir: DIR`` in the training config (see
``configs/synthetic_grabcut.yaml``). Existing masks are kept unless ``--overwrite``, so an
interrupted run continues where it stopped. Needs OpenCV (``pip install
opencv-python-headless``).

The images and scribbles come from a folder dataset (``DATA_ROOT --split NAME``) or from the
training split of a config (``--config CONFIG.yaml [--set key=value]``: any dataset, including
``voc`` and ``synthetic``; its scribbles, or clicks with ``supervision: clicks``; ``-o``
defaults to the config's ``label_dir``).

Examples::

    weakseg proposals grabcut data/acdc-scribble --split train -o runs/acdc_grabcut/masks
    weakseg proposals grabcut --config configs/synthetic_grabcut.yaml
    weakseg train --config configs/synthetic_grabcut.yaml

The other proposal baselines are training modes: DenseCRF-ADM (``losses: {densecrf_adm:
...}``) and ScribbleSup-style iterative proposals (``proposal_every: N``), see ``weakseg train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from weakseg.cli._common import add_command, add_set_option, add_subcommands, log_data_to_stderr
from weakseg.errors import WeaksegError

if TYPE_CHECKING:
    from torch.utils.data import Dataset


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    summary = "proposal baselines: one-time GrabCut masks from scribbles"
    parser = add_command(subparsers, "proposals", summary, __doc__)
    commands = add_subcommands(parser, "proposals_command")
    summary = "write a GrabCut mask per training image, from its scribbles"
    grabcut = add_command(commands, "grabcut", summary, __doc__)
    grabcut.add_argument(
        "data_root", nargs="?", type=Path, default=None, metavar="DATA_ROOT", help="folder dataset"
    )
    grabcut.add_argument(
        "--split", default=None, help="split name (default: train, or the config's)"
    )
    grabcut.add_argument("--config", default=None, help="training config whose train split to use")
    add_set_option(grabcut, "override a config key (with --config; repeatable)")
    grabcut.add_argument(
        "-o", "--output", type=Path, default=None, help="output folder (default: label_dir)"
    )
    grabcut.add_argument("--n-iter", type=int, default=5, help="GrabCut iterations per class")
    grabcut.add_argument("--overwrite", action="store_true", help="replace existing masks")
    grabcut.add_argument("--skip-bad", action="store_true", help="report and skip bad samples")
    grabcut.add_argument("--no-progress", action="store_true", help="no progress bar")
    grabcut.set_defaults(func=run_grabcut)
    return parser


def run_grabcut(args: argparse.Namespace) -> int:
    """Write the proposals; errors (bad data, bad config, no OpenCV) are a
    :class:`WeaksegError`: one line on stderr, exit status 2."""
    from weakseg.proposals import write_grabcut_proposals

    if args.skip_bad:
        log_data_to_stderr()
    try:
        dataset, output = _dataset_and_output(args)
        paths = write_grabcut_proposals(
            dataset,
            output,
            n_iter=args.n_iter,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except WeaksegError:
        raise
    except (ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        raise WeaksegError(f"weakseg proposals grabcut: {exc}") from exc
    print(f"wrote {len(paths)} GrabCut proposals to {output}")
    print(f"train on them with: --set supervision=full --set label_dir={output}")
    return 0


def _dataset_and_output(args: argparse.Namespace) -> tuple[Dataset, Path]:
    """The scribbled dataset and the output folder that the arguments name."""
    from weakseg.data.folder import FolderDataset
    from weakseg.engine.config import load_config
    from weakseg.engine.loaders import build_dataset

    if (args.data_root is None) == (args.config is None):
        raise ValueError("give either DATA_ROOT (a folder dataset) or --config CONFIG.yaml")
    if args.overrides and args.config is None:
        raise ValueError("--set needs --config")
    if args.config is None:
        split = args.split or "train"
        dataset = FolderDataset(
            args.data_root, split, supervision="scribbles", skip_bad=args.skip_bad
        )
        if args.output is None:
            raise ValueError("-o/--output is required with DATA_ROOT")
        return dataset, args.output
    config = load_config(args.config, args.overrides)
    if args.skip_bad:
        config.skip_bad = True
    # a GrabCut training config has supervision: full; its proposals come from the scribbles
    supervision = (
        config.supervision if config.supervision in ("scribbles", "clicks") else "scribbles"
    )
    dataset = build_dataset(config, args.split or config.train_split, supervision)
    output = args.output if args.output is not None else config.label_dir
    if output is None:
        raise ValueError(f"-o/--output is required: {args.config} sets no label_dir")
    return dataset, Path(output)
