"""``weakseg demo``: what regularized losses add to scribbles, on generated data, in minutes.

Trains four small U-Nets on the generated synthetic data set (200 images of 64 px, 4 classes,
~4% of the pixels scribbled) with the same seed, data and schedule: partial cross-entropy (pCE)
on the scribbles only, pCE + dense CRF loss, pCE + kernel cut loss, and full masks (the upper
bound). Prints validation mIoU and the error rate near the object boundaries, and writes
``results.json``, ``results.md``, ``figure.png`` (image, scribbles, predictions, ground truth and
the regularizers' gradients dR/dS as in Fig. 1 of Tang et al., ECCV 2018) and each run's
``checkpoint.pth`` (for ``weakseg eval`` / ``weakseg predict``). About 3-5 minutes on 2 CPU cores;
nothing is downloaded.

The numbers are bit-identical run to run on one machine for one --seed and one --threads (the
PyTorch and numba lattice threads, set for the demo whatever OMP_NUM_THREADS says); another thread
count, CPU or torch / numba version gives other (equally valid) numbers. The README's numbers are
those of 2 threads.

Examples::

    weakseg demo
    weakseg demo --out runs/demo --epochs 12
    weakseg demo --quick          # a few seconds: tiny data, 1 epoch (numbers meaningless)
    weakseg demo --threads 4      # faster on 4 free cores; other numbers than 2 threads
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from weakseg.errors import ConfigError
from weakseg.recipes.demo_runs import DEFAULT_THREADS, DemoSettings


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``weakseg demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="train pCE / + dense CRF / + kernel cut / full masks on synthetic data, compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default = DemoSettings()
    parser.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs per run (default: {default.epochs}; 1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a shortened demo (16 images of 32 px, 1 epoch) that checks the pipeline end to end",
    )
    parser.add_argument("--seed", type=int, default=default.seed, help="(default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="CPU threads of PyTorch and the numba lattice for the demo; the numbers depend on "
        "it (default: %(default)s: the README's numbers are those of 2 threads)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the table; returns 0."""
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads < 1:
        raise ConfigError(
            f"--threads must be >= 1, got {args.threads}",
            hint=f"the README's numbers are those of --threads {DEFAULT_THREADS}",
        )
    from weakseg.engine.device import resolve_device

    resolve_device(args.device)  # before anything runs: a missing GPU fails at once
    overrides = {"seed": args.seed, "device": args.device}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    settings = DemoSettings.quick(**overrides) if args.quick else DemoSettings(**overrides)
    out = Path(args.out)
    command = shlex.join(
        ["weakseg", "demo", "--out", str(out), "--epochs", str(settings.epochs)]
        + ["--seed", str(settings.seed), "--threads", str(args.threads)]
        + (["--quick"] if args.quick else [])
    )
    print(
        f"weakseg demo: 4 U-Nets x {settings.epochs} epochs on {settings.train_images} synthetic "
        f"{settings.image_size}px images, {args.threads} threads -> {out}",
        flush=True,
    )
    from weakseg.recipes.demo import format_table, run_demo

    report = run_demo(
        out, settings, progress=not args.no_progress, command=command, threads=args.threads
    )
    print(format_table(report["runs"], settings.band_width))
    print(
        f"{report['wall_seconds']:.0f} s in all; wrote {out / 'results.md'}, "
        f"{out / 'results.json'}, {out / report['figure']}"
    )
    return 0
