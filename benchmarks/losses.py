"""Forward+backward time of every regularized loss at the settings of DESIGN.md's C++ numbers.

K = 21 classes, sigma_rgb = 15, sigma_xy = 100, generated photo-like RGB images and softmax
probabilities (the softmax itself is not timed),
321x321 and 512x512, batch 1 and 4, on the device given (CPU by default, all its threads unless
--threads). Prints the median of --repeat runs after one warm-up, in milliseconds, next to the
original rloss C++ filter (dense CRF only, 2 threads on the 2-core development machine).

    python benchmarks/losses.py --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from weakseg.cli.bench import synthetic_image
from weakseg.losses import (
    dense_crf_loss,
    grid_potts_loss,
    kernel_cut_loss,
    normalized_cut_loss,
)

# DESIGN.md: the original rloss C++ dense CRF loss, forward+backward, K=21, 2 threads, in ms.
ORIGINAL_MS = {
    (321, 1, 1.0): 129,
    (321, 4, 1.0): 355,
    (512, 1, 1.0): 310,
    (512, 4, 1.0): 880,
    (321, 1, 0.5): 35,
    (321, 4, 0.5): 96,
    (512, 1, 0.5): 89,
    (512, 4, 0.5): 220,
}
SIGMAS = {"sigma_rgb": 15.0, "sigma_xy": 100.0}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--sizes", type=int, nargs="+", default=[321, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--only", default="", help="time only the losses whose name contains this")
    return parser


def losses(scale_factor: float) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    table: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "dense CRF": lambda i, p: dense_crf_loss(i, p, scale_factor=scale_factor, **SIGMAS),
        "dense CRF (rloss)": lambda i, p: dense_crf_loss(
            i, p, scale_factor=scale_factor, normalization="rloss", **SIGMAS
        ),
        "normalized cut": lambda i, p: normalized_cut_loss(
            i, p, scale_factor=scale_factor, **SIGMAS
        ),
        "kernel cut (shared W)": lambda i, p: kernel_cut_loss(
            i, p, scale_factor=scale_factor, **SIGMAS
        ),
        "kernel cut (2 W)": lambda i, p: kernel_cut_loss(
            i, p, scale_factor=scale_factor, nc_sigma_xy=40.0, **SIGMAS
        ),
    }
    if scale_factor == 1.0:
        table["grid Potts (8)"] = lambda i, p: grid_potts_loss(i, p, connectivity=8)
    return table


def time_ms(fn: Callable[[Tensor, Tensor], Tensor], images: Tensor, logits: Tensor, repeat: int):
    # The loss alone, as for the original's figures: the softmax is computed outside the timing.
    probs = logits.detach().softmax(dim=1).requires_grad_()

    def run() -> float:
        probs.grad = None
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(images, probs).backward()
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    run()  # warm-up
    return statistics.median(run() for _ in range(repeat))


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(
        f"device={args.device} threads={torch.get_num_threads()} K={args.classes} "
        f"sigma_rgb=15 sigma_xy=100, median of {args.repeat} forward+backward runs, ms"
    )
    print(f"{'loss':24s} {'scale':>5s} {'size':>7s} {'B':>2s} {'weakseg':>9s} {'C++ rloss':>10s}")
    for scale_factor in (1.0, 0.5):
        selected = {k: v for k, v in losses(scale_factor).items() if args.only in k}
        configs = itertools.product(selected.items(), args.sizes, args.batches)
        for (name, fn), size, batch in configs:
            # Photo-like generated images (shaded background, objects, texture, noise): uniform
            # noise would fill the colour space and make every lattice far larger than on photos.
            images = torch.stack([synthetic_image(size, seed=b) for b in range(batch)])
            logits = torch.randn(batch, args.classes, size, size, generator=generator)
            logits = logits.to(args.device).requires_grad_()
            ms = time_ms(fn, images.to(args.device), logits, args.repeat)
            original = (
                ORIGINAL_MS.get((size, batch, scale_factor), "") if name == "dense CRF" else ""
            )
            row = f"{name:24s} {scale_factor:5.2g} {size:7d} {batch:2d} {ms:9.1f} {original:>10}"
            print(row, flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
