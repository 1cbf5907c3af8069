"""Which segmentation does each regularizer prefer on ACDC? An energy probe, no training.

For training slices of ACDC (patients 001-070, never the held-out ones) the regularized losses
are evaluated at the ground truth ``S*`` (one-hot) and at two perturbations of it: every
foreground structure grown by ``r`` px into the background, and shrunk by ``r`` px. A loss
whose value *drops* when the foreground grows rewards eating the background -- the balanced-
partition bias of normalized cut on structures covering a few percent of the image (its
``cut(S_k) / vol(S_k)`` falls as a segment grows, while the background's term, over a large
volume, hardly changes). Prints, per loss and setting, the median relative change
``(R(S) - R(S*)) / R(S*)`` and the share of slices where the perturbed segmentation scores
*better* than the truth (the truth should be a local minimum: 0% on both sides).

``--segmentations NAME=DIR`` scores label maps ``DIR/<id>.png`` of the same slices too, e.g. the
predictions of a trained network: does the loss prefer what training found to the truth?
``--print-slices`` prints the probed slices' image files, for ``weakseg predict``::

    python scripts/acdc_regularizer_bias.py [--data-root ../shared/data/acdc-scribble]
        [--slices 48] [--radius 3] [--gammas 1 0.1 0.01] [--no-baselines]
        [--segmentations NAME=DIR ...] [--print-slices]
    weakseg predict RUN/checkpoint.pth $(python scripts/acdc_regularizer_bias.py
        --print-slices) -o PRED --no-overlay
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from weakseg.data import FolderDataset
from weakseg.data.io import read_label
from weakseg.errors import DataError
from weakseg.losses import (
    GaussianAffinity,
    dense_crf_loss,
    kernel_cut_loss,
    normalized_cut_loss,
)


def perturbed(mask: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """``mask`` with each foreground class grown into the background (or shrunk) by
    ``radius`` px."""
    out = mask.copy()
    for k in np.unique(mask):
        if k == 0:
            continue
        region = mask == k
        if grow:
            out[ndimage.binary_dilation(region, iterations=radius) & (mask == 0)] = k
        else:
            out[region & ~ndimage.binary_erosion(region, iterations=radius)] = 0
    return out


def one_hot(mask: np.ndarray, num_classes: int) -> torch.Tensor:
    """``[1, K, H, W]`` float64 probabilities of a label map (a small floor keeps logs finite)."""
    probs = np.eye(num_classes)[mask].transpose(2, 0, 1)
    return torch.from_numpy(0.98 * probs + 0.02 / num_classes)[None]


def normalized_cut_terms(probs: torch.Tensor, affinity: GaussianAffinity) -> torch.Tensor:
    """``[K]`` per-class terms ``S_k' W (1 - S_k) / d' S_k`` of the normalized cut of one image
    (``probs [1, K, H, W]``, ``W`` = ``affinity``); their sum is :func:`normalized_cut_loss`."""
    w_probs = affinity(probs)
    degree = w_probs.sum(dim=1, keepdim=True)  # W 1 = sum_k W S_k, as sum_k S_k = 1
    cut = (probs * (degree - w_probs)).flatten(2).sum(-1)
    volume = (probs * degree).flatten(2).sum(-1)
    return (cut / volume)[0]


def read_segmentation(folder: Path, sample_id: str, shape: tuple[int, ...]) -> np.ndarray:
    """The label map ``folder/<sample_id>.png`` (class ids), checked against the slice's
    ``shape``; the errors name the file."""
    path = folder / f"{sample_id}.png"
    if not path.is_file():
        raise SystemExit(f"error: no segmentation {path} (predict the --print-slices files)")
    try:
        labels = read_label(path, "segmentation").astype(np.int64)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    if labels.shape != shape:
        raise SystemExit(f"error: {path} is {labels.shape}, the slice {shape}")
    return labels


def named_folders(items: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` arguments as ``{NAME: DIR}``."""
    folders = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"error: --segmentations takes NAME=DIR, got {item!r}")
        folders[name] = Path(folder)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/acdc-scribble")
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--radius", type=int, default=3)
    parser.add_argument("--sigma-xy", type=float, default=40.0)
    parser.add_argument("--gammas", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    parser.add_argument("--no-baselines", action="store_true", help="kernel cut rows only")
    parser.add_argument(
        "--segmentations",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="also score the label maps DIR/<id>.png of the probed slices",
    )
    parser.add_argument(
        "--print-slices", action="store_true", help="print the probed image files and stop"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = FolderDataset(args.data_root, "train", supervision="full", channels=1)
    indices = np.linspace(0, len(data) - 1, args.slices).round().astype(int)
    if args.print_slices:
        print("\n".join(str(data.files[int(index)].image) for index in indices))
        return
    folders = named_folders(args.segmentations)
    candidate_names = ["grow", "shrink", *folders]
    sxy = args.sigma_xy
    # each loss of (images, probs, W at sigma_xy, W at sigma_xy 200): the two affinities are
    # built once per image and shared by all the losses and segmentations scored on it
    Loss = Callable[[torch.Tensor, torch.Tensor, GaussianAffinity, GaussianAffinity], torch.Tensor]
    losses: dict[str, Loss] = {
        "dense CRF": lambda i, p, w, _: dense_crf_loss(i, p, affinity=w),
        "normalized cut": lambda i, p, w, _: normalized_cut_loss(i, p, affinity=w),
        # the "NC over the foreground classes": the background's term left out
        "normalized cut, foreground classes": lambda i, p, w, _: normalized_cut_terms(p, w)[
            1:
        ].sum(),
    }
    if args.no_baselines:
        losses = {}
    for gamma in args.gammas:
        losses[f"kernel cut, gamma {gamma}"] = lambda i, p, w, _, g=gamma: kernel_cut_loss(
            i, p, gamma=g, affinity=w
        )
    if not args.no_baselines:
        losses["kernel cut, gamma 0.1, NC sigma_xy 200"] = lambda i, p, w, wide: kernel_cut_loss(
            i, p, gamma=0.1, affinity=w, nc_affinity=wide
        )
    changes: dict[str, dict[str, list[float]]] = {
        name: {candidate: [] for candidate in candidate_names} for name in losses
    }
    foreground, background_share = [], []
    for index in indices:
        image, _, mask = data.load(int(index))
        foreground.append(float((mask > 0).mean()))
        images = torch.from_numpy(image)[None].double()  # (1, 1, H, W) 0-255
        affinity = GaussianAffinity(images, 15.0, sxy, dtype=torch.float64)
        wide = GaussianAffinity(images, 15.0, 200.0, dtype=torch.float64)
        truth = one_hot(mask, data.num_classes)
        # the segmentations compared with the truth: the perturbed truths, then the read ones
        candidates = {
            side: one_hot(perturbed(mask, args.radius, side == "grow"), data.num_classes)
            for side in ("grow", "shrink")
        }
        sample_id = data.files[int(index)].id
        for name, folder in folders.items():
            labels = read_segmentation(folder, sample_id, mask.shape)
            candidates[name] = one_hot(labels, data.num_classes)
        terms = normalized_cut_terms(truth, affinity)
        background_share.append(float(terms[0] / terms.sum()))
        for name, loss in losses.items():
            reference = float(loss(images, truth, affinity, wide))
            for candidate, probs in candidates.items():
                value = float(loss(images, probs, affinity, wide))
                changes[name][candidate].append((value - reference) / reference)
    print(
        f"{len(indices)} ACDC training slices, foreground {100 * np.median(foreground):.1f}% "
        f"of the pixels (median); structures grown / shrunk by {args.radius} px; "
        f"sigma_rgb 15, sigma_xy {sxy}"
    )
    header = "".join(f"{name + ': median':>22} {'better':>7}" for name in candidate_names)
    print(f"{'loss':<40}{header}")
    for name, by_candidate in changes.items():
        cells = []
        for candidate in candidate_names:
            values = by_candidate[candidate]
            better = sum(v < 0 for v in values) / len(values)
            cells.append(f"{100 * statistics.median(values):+21.1f}% {100 * better:6.0f}%")
        print(f"{name:<40}{''.join(cells)}")
    print(
        f"the background's term is {100 * np.median(background_share):.1f}% of the normalized "
        "cut at the ground truth (median)"
    )


if __name__ == "__main__":
    main()
