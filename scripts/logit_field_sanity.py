"""Sanity check of the regularized losses (issue 3, must-show 4) on a free logit field.

No network: the logits of every pixel are free parameters, optimized with Adam on
``pCE(scribbles) + lambda * R(softmax(logits))`` from the scribbles alone, then the argmax is
scored against the full mask (Dice). With pCE alone the unlabeled pixels never move (they stay
at uniform logits, predicted background), so any gain comes from the regularizer propagating
the scribbles along the image. Cases: a synthetic two-region image, and ACDC validation slices
(cropped around their scribbles, so that the loss runs in seconds on a CPU).

    python scripts/logit_field_sanity.py --data ../shared/data/acdc-scribble --slices 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from weakseg.losses import (
    dense_crf_loss,
    kernel_cut_loss,
    normalized_cut_loss,
    partial_cross_entropy,
)

Regularizer = Callable[[Tensor, Tensor], Tensor]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/acdc-scribble"))
    parser.add_argument("--slices", type=int, default=8, help="ACDC validation slices to use")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight", type=float, default=1.0, help="lambda")
    parser.add_argument("--sigma-rgb", type=float, default=15.0)
    parser.add_argument("--sigma-xy", type=float, default=10.0)
    parser.add_argument("--gamma", type=float, default=1.0, help="NC weight in kernel cut")
    parser.add_argument("--margin", type=int, default=12, help="crop margin around scribbles")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def synthetic_case(seed: int) -> tuple[str, Tensor, Tensor, Tensor]:
    """A noisy bright disc on a darker background, one scribble in each region."""
    generator = torch.Generator().manual_seed(seed)
    size = 64
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((y - 30) ** 2 + (x - 34) ** 2 < 17**2).long()
    image = 70 + 100 * mask.float() + 25 * torch.randn(size, size, generator=generator)
    scribbles = torch.full((size, size), 255)
    scribbles[28:31, 26:42] = 1
    scribbles[4:7, 4:60] = 0
    scribbles[55:58, 10:50] = 0
    return "synthetic disc", image.clamp(0, 255)[None, None], scribbles[None], mask[None]


def acdc_cases(root: Path, count: int, margin: int) -> list[tuple[str, Tensor, Tensor, Tensor]]:
    """One validation slice per patient: the middle one of the first frame among the slices
    where all three structures are visible (>= 150 pixels each), cropped around its scribbles."""
    first_frame: dict[str, str] = {}
    qualifying: dict[str, list[str]] = {}
    for name in (root / "splits" / "val.txt").read_text().split():
        patient, frame = name.split("_")[:2]
        if first_frame.setdefault(patient, frame) != frame:
            continue
        mask = np.array(Image.open(root / "masks" / f"{name}.png"))
        if min((mask == k).sum() for k in (1, 2, 3)) >= 150:
            qualifying.setdefault(patient, []).append(name)
    cases = []
    for names in qualifying.values():
        name = names[len(names) // 2]
        image = np.array(Image.open(root / "images" / f"{name}.png")).astype(np.float32)
        scribbles = np.array(Image.open(root / "scribbles" / f"{name}.png")).astype(np.int64)
        mask = np.array(Image.open(root / "masks" / f"{name}.png")).astype(np.int64)
        ys, xs = np.nonzero(scribbles != 255)
        top, left = max(0, ys.min() - margin), max(0, xs.min() - margin)
        crop = np.s_[top : ys.max() + margin + 1, left : xs.max() + margin + 1]
        cases.append(
            (
                name,
                torch.from_numpy(image[crop])[None, None],
                torch.from_numpy(scribbles[crop])[None],
                torch.from_numpy(mask[crop])[None],
            )
        )
        if len(cases) == count:
            break
    return cases


def dice(prediction: Tensor, mask: Tensor, classes: list[int]) -> float:
    """Mean Dice over ``classes`` (a class absent from both counts as 1)."""
    scores = []
    for k in classes:
        p, m = prediction == k, mask == k
        total = int(p.sum() + m.sum())
        scores.append(1.0 if total == 0 else 2 * int((p & m).sum()) / total)
    return float(np.mean(scores))


def fit(
    image: Tensor,
    scribbles: Tensor,
    classes: int,
    regularizer: Regularizer | None,
    args: argparse.Namespace,
) -> Tensor:
    """Adam on a free logit field from zeros; returns the argmax labels."""
    logits = torch.zeros(1, classes, *image.shape[2:], requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=args.lr)
    for _ in range(args.iterations):
        optimizer.zero_grad()
        loss = partial_cross_entropy(logits, scribbles)
        if regularizer is not None:
            loss = loss + args.weight * regularizer(image, logits.softmax(dim=1))
        loss.backward()
        optimizer.step()
    return logits.detach().argmax(dim=1)


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    bandwidths = {"sigma_rgb": args.sigma_rgb, "sigma_xy": args.sigma_xy}
    regularizers: dict[str, Regularizer | None] = {
        "pCE": None,
        "+CRF": lambda i, p: dense_crf_loss(i, p, **bandwidths),
        "+NC": lambda i, p: normalized_cut_loss(i, p, **bandwidths),
        "+KC": lambda i, p: kernel_cut_loss(i, p, gamma=args.gamma, **bandwidths),
    }
    cases = [(*synthetic_case(args.seed), [1])]
    if args.slices > 0:
        cases += [(*case, [1, 2, 3]) for case in acdc_cases(args.data, args.slices, args.margin)]
    print(
        f"lambda={args.weight} sigma_rgb={args.sigma_rgb} sigma_xy={args.sigma_xy} "
        f"gamma={args.gamma} iterations={args.iterations} lr={args.lr}"
    )
    header = f"{'case':34s} {'size':>9s}" + "".join(f"{name:>8s}" for name in regularizers)
    print(header + f"{'time':>8s}")
    results: dict[str, list[float]] = {name: [] for name in regularizers}
    for name, image, scribbles, mask, foreground in cases:
        start = time.perf_counter()
        row = f"{name:34s} {'x'.join(map(str, image.shape[2:])):>9s}"
        for method, regularizer in regularizers.items():
            labels = fit(image, scribbles, max(foreground) + 1, regularizer, args)
            score = dice(labels, mask, foreground)
            if name != "synthetic disc":
                results[method].append(score)
            row += f"{score:8.3f}"
        print(row + f"{time.perf_counter() - start:7.1f}s", flush=True)
    if args.slices > 0:
        row = f"{'ACDC mean (Dice over RV, MYO, LV)':34s} {'':>9s}"
        print(row + "".join(f"{np.mean(v):8.3f}" for v in results.values()))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
