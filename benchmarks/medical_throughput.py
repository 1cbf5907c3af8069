"""Training throughput (2D slices per second) of the MRI recipe, with and without the
regularizer (issue 13, must-show 3).

Builds the recipe's run with the engine (``weakseg.engine.train.build``: its dataset,
augmentation, loader workers, U-Net and optimizer) for each variant -- the config's own
regularizer, and partial cross-entropy alone -- then times optimizer steps including data
loading, the variants interleaved in rounds so that a change of machine load hits both. Prints
slices/s per variant (median over rounds) and the regularizer's share of a step; the network in
float32, and with ``--amp-cpu`` also in bfloat16 autocast (the recipe's ``amp_cpu: true``).
Uses ACDC when ``--data-root`` exists, else a synthetic NIfTI set of the same shape (volumes of
224x224 slices).

    python benchmarks/medical_throughput.py [--config configs/acdc_mri_cpu.yaml]
        [--data-root ../shared/data/acdc-scribble] [--threads 2] [--rounds 3] [--steps 4]
        [--amp-cpu]   (also both variants with bfloat16 autocast, amp_cpu: true)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _variants(config_path: str, overrides: list[str], amp_cpu: bool) -> dict[str, object]:
    from weakseg.engine.config import load_config

    # float32 whatever the config says (amp_cpu: true in the recipe); bfloat16 with --amp-cpu
    float32 = [*overrides, "amp_cpu=false"]
    regularized = load_config(config_path, float32)
    names = ", ".join(regularized.losses) or "none"
    plain = load_config(config_path, [*float32, "losses={}", "rampup_iterations=0"])
    variants = {f"pCE + {names}": regularized, "pCE only": plain}
    if amp_cpu:  # the same two in bfloat16 autocast
        for name, config in list(variants.items()):
            variants[f"{name}, amp_cpu"] = dataclasses.replace(config, amp_cpu=True)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/acdc_mri_cpu.yaml")
    parser.add_argument("--data-root", default="../shared/data/acdc-scribble")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant and round")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--amp-cpu", action="store_true", help="also time both variants with amp_cpu (bfloat16)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from weakseg.engine.train import build, train_step

    scratch = tempfile.TemporaryDirectory()
    root = Path(args.data_root)
    if not root.is_dir():
        from weakseg.data import write_synthetic_volumes

        root = write_synthetic_volumes(
            Path(scratch.name) / "mri", n_train=16, n_val=1, shape=(224, 224, 10)
        )
        print(f"{args.data_root} not found: synthetic NIfTI volumes in {root}")
    overrides = [
        f"data_root={root}",
        "val_split=null",
        "progress=false",
        "tensorboard=false",
        f"output_dir={scratch.name}/run",
        *args.overrides,
    ]
    runs, iterators, times = {}, {}, {}
    for name, config in _variants(args.config, overrides, args.amp_cpu).items():
        runs[name] = build(config)
        iterators[name] = iter(runs[name].loader)
        times[name] = []
    first = next(iter(runs.values())).config
    print(
        f"{args.config}: U-Net, batch {first.batch_size}, crop {first.crop_size}, "
        f"{first.num_workers} loader workers, {torch.get_num_threads()} threads; "
        f"{args.rounds} rounds x {args.steps} steps per variant, after one warm-up step"
    )

    def steps(name: str, count: int) -> float:
        run = runs[name]
        start = time.perf_counter()
        for _ in range(count):
            batch = next(iterators[name])
            train_step(
                run.model,
                [batch],
                run.objective,
                run.optimizer,
                run.scaler,
                run.config,
                run.device,
            )
        return time.perf_counter() - start

    for name in runs:
        steps(name, 1)  # warm-up: lattice caches, loader workers started
    for _ in range(args.rounds):
        for name in runs:
            seconds = steps(name, args.steps)
            times[name].append(args.steps * runs[name].config.batch_size / seconds)
    rates = {name: statistics.median(values) for name, values in times.items()}
    for name, rate in rates.items():
        spread = f"{min(times[name]):.1f}-{max(times[name]):.1f}"
        print(f"{name:>24}: {rate:6.2f} slices/s (rounds: {spread})")
    regularized, plain = list(rates.values())[:2]
    share = 1.0 - regularized / plain
    print(f"the regularizer costs {share:.0%} of a regularized step's time")
    if args.amp_cpu:
        regularized_bf16 = list(rates.values())[2]
        print(f"amp_cpu (bfloat16): {regularized_bf16 / regularized:.2f}x the regularized rate")


if __name__ == "__main__":
    main()
