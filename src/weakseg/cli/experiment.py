"""``weakseg experiment RECIPE.yaml``: train and evaluate every run of a recipe, write a table.

Recipes live in ``configs/experiments/`` (one per table or figure of the paper; see
:mod:`weakseg.recipes.experiments` for the format). Each run trains into ``OUTPUT/<run>`` with
``resume=auto``, so running the same command again skips finished runs and continues an
interrupted one; a run's prepare commands (e.g. the GrabCut masks of Table 2) run before its
training and are skipped once their output exists. ``OUTPUT/results.md`` gets the table and the
exact commands.

Examples::

    weakseg experiment configs/experiments/acdc_table1.yaml --dry-run
    weakseg experiment configs/experiments/synthetic_table2.yaml     # generated data, minutes
    weakseg experiment configs/experiments/acdc_table1.yaml --only pce dense_crf
    weakseg experiment configs/experiments/acdc_fig5.yaml --set max_iterations=100
    weakseg experiment configs/experiments/voc_table1.yaml --set data_root=data/VOC \
        --launcher "torchrun --nproc-per-node 4"
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from weakseg.cli._common import add_command, add_set_option
from weakseg.errors import ConfigError, WeaksegError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    summary = "run a recipe of the paper's tables (train + eval each run, write results.md)"
    parser = add_command(subparsers, "experiment", summary, __doc__)
    parser.add_argument("recipe", help="a recipe YAML, e.g. configs/experiments/acdc_table1.yaml")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="output folder (default: runs/experiments/<recipe file name>)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="RUN", help="run only these runs (the table lists all)"
    )
    add_set_option(
        parser, "passed to every run's 'weakseg train --set' after the recipe's settings"
    )
    parser.add_argument(
        "--launcher",
        default=None,
        metavar="COMMAND",
        help="start each training with this, e.g. 'torchrun --nproc-per-node 4' (runs "
        "'COMMAND -m weakseg train ...')",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands without running them"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from weakseg.recipes.experiments import load_experiment, run_experiment

    try:
        experiment = load_experiment(args.recipe)
        if args.only:
            experiment.select(args.only)  # names checked before anything runs
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from error
    output = Path(args.output or Path("runs/experiments") / Path(args.recipe).stem)
    try:
        results = run_experiment(
            experiment,
            output,
            extra_sets=args.overrides,
            dry_run=args.dry_run,
            launcher=shlex.split(args.launcher or ""),
            only=args.only,
        )
    except RuntimeError as error:
        if isinstance(error, WeaksegError):
            raise
        raise WeaksegError(str(error)) from error
    if not args.dry_run:
        print(results.read_text())
        print(f"wrote {results}")
    return 0
