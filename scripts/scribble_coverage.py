"""Simulated vs real ACDC scribbles: labeled fraction, per-class coverage and share (issue 5).

Simulates scribbles from the full masks of a folder dataset (seed ``[seed, index]`` per slice,
as ``weakseg scribbles simulate`` does) and prints, next to the dataset's real scribbles, the
labeled fraction of all pixels and per class the coverage (scribbled pixels of the class / mask
pixels of the class, over the whole split) and the share of the labeled pixels, with the
simulated / real ratio. ``--synthetic N`` also prints the labeled fraction of the first ``N``
samples of the synthetic dataset (the demo's data), whose scribbles come from the same simulator.

    python scripts/scribble_coverage.py /work/shared/data/acdc-scribble --split train
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from weakseg.data import FolderDataset, SyntheticDataset
from weakseg.data.scribbles import ScribbleStats, simulate_scribbles


def compare(root: Path, split: str, every: int, seed: int, width: int) -> str:
    """The real vs simulated table for every ``every``-th slice of ``split``."""
    dataset = FolderDataset(root, split)
    real = ScribbleStats(dataset.num_classes, dataset.class_names)
    simulated = ScribbleStats(dataset.num_classes, dataset.class_names)
    start = time.perf_counter()
    indices = range(0, len(dataset), every)
    for index in indices:
        _, scribbles, mask = dataset.load(index)
        real.update(scribbles, mask)
        rng = np.random.default_rng([seed, index])
        simulated.update(simulate_scribbles(mask, width=width, seed=rng), mask)
    seconds = time.perf_counter() - start
    r, s = real.summary(), simulated.summary()
    lines = [
        f"{root} split {split!r}: {len(indices)} slices, simulated with width={width}, "
        f"seed={seed} ({seconds:.0f} s)",
        f"{'':<22}{'real':>9}{'simulated':>11}{'sim/real':>10}",
        _row("labeled fraction %", r["labeled_fraction"], s["labeled_fraction"]),
    ]
    for key, title in (("coverage", "coverage %"), ("share_of_labeled", "share of labeled %")):
        lines.append(title)
        for name in dataset.class_names:
            lines.append(_row(f"  {name}", r["per_class"][name][key], s["per_class"][name][key]))
    lines.append(
        f"simulated pixels disagreeing with masks: {100 * s['disagreement_with_masks']:.3f}%"
    )
    return "\n".join(lines)


def _row(title: str, real: float, simulated: float) -> str:
    ratio = simulated / real if real else float("nan")
    return f"{title:<22}{100 * real:>9.3f}{100 * simulated:>11.3f}{ratio:>10.2f}"


def synthetic_fraction(n: int, size: int, seed: int) -> float:
    """Labeled fraction of the first ``n`` synthetic samples (``size`` px, dataset ``seed``)."""
    dataset = SyntheticDataset(n, size, seed=seed, cache=False)
    stats = ScribbleStats(dataset.num_classes)
    for index in range(n):
        _, mask, scribbles = dataset.generate(index)
        stats.update(scribbles, mask)
    return float(stats.summary()["labeled_fraction"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder dataset with scribbles/ and masks/")
    parser.add_argument("--split", default="train", help="split name (default train)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th slice (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--width", type=int, default=2, help="stroke width in px (default 2)")
    parser.add_argument(
        "--synthetic", type=int, default=0, help="also report N synthetic samples (default 0)"
    )
    args = parser.parse_args()
    print(compare(args.root, args.split, args.every, args.seed, args.width))
    if args.synthetic:
        fraction = synthetic_fraction(args.synthetic, 64, seed=0)
        print(
            f"synthetic dataset (64 px, seed 0, {args.synthetic} samples): "
            f"labeled fraction {100 * fraction:.3f}%"
        )


if __name__ == "__main__":
    main()
