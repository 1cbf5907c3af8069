"""Shallow segmentation of ACDC slices from their scribbles (issue 4, must-show 4).

No training: every slice is segmented on its own from its scribbles, and the result is scored
against the full mask. Methods (``--methods``, comma-separated, default all):

- ``appearance_crf``: :func:`weakseg.interactive.segment_image` (the default of ``weakseg
  segment``) at its defaults.
- ``pce``: :func:`weakseg.interactive.logit_field_segmentation` with ``weight=0``: partial
  cross-entropy only. The unlabeled pixels then keep their initialization (each takes the
  class of its nearest scribble with the default ``init="nearest"``).
- ``dense_crf``, ``normalized_cut``, ``kernel_cut``, ``grid_potts``:
  :func:`weakseg.interactive.logit_field_segmentation`
  with that regularizer, every other argument at its default.
- ``grabcut``: :func:`weakseg.proposals.grabcut_proposal` (one-vs-rest GrabCut, needs OpenCV;
  unlabeled pixels probable foreground of the class of their nearest scribble).
- ``grabcut_pr_bgd``: ``cv2.grabCut`` in mask mode, 5 iterations, one class against the rest,
  every unlabeled pixel probable background (``scripts/segment_photos.py``'s seeding, the
  stronger one on the photos), the gray slice repeated to 3 channels.
- ``crf_inference``: dense CRF mean field (:func:`weakseg.crf.dense_crf_inference`) from a
  unary that is confident (probability ``0.9``) in the scribbled class and uniform elsewhere,
  with the scribbles clamped, ``n_iter`` and kernel parameters as set below.

Metrics, per slice and then averaged over the slices: Dice of each foreground class (right
ventricle, myocardium, left ventricle) and their mean, IoU averaged over the 4 classes (mIoU).
A class absent from both the mask and the prediction of a slice has no score on that slice
(0/0): it is left out of that slice's means and of that class's average, instead of counting
as a perfect 1. Time is the wall-clock time of the method's call (loading excluded).

    nice -n 19 python scripts/segment_acdc.py --split val --output runs/segment_acdc.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from weakseg.crf import dense_crf_inference
from weakseg.data.io import read_image, read_label
from weakseg.engine.metrics import confusion_matrix, dice_per_class, iou_per_class
from weakseg.interactive import logit_field_segmentation, segment_image
from weakseg.proposals import grabcut_proposal

NUM_CLASSES = 4
FOREGROUND = ("right_ventricle", "myocardium", "left_ventricle")
REGULARIZERS = ("dense_crf", "normalized_cut", "kernel_cut", "grid_potts")
METHODS = ("appearance_crf", "pce", *REGULARIZERS, "grabcut", "grabcut_pr_bgd", "crf_inference")
LABELS = {
    "appearance_crf": "weakseg segment (appearance + dense CRF, mean field)",
    "pce": "pCE only",
    "dense_crf": "pCE + dense CRF",
    "normalized_cut": "pCE + normalized cut",
    "kernel_cut": "pCE + kernel cut",
    "grid_potts": "pCE + grid Potts",
    "grabcut": "GrabCut proposals",
    "grabcut_pr_bgd": "grabCut (PR_BGD)",
    "crf_inference": "dense CRF inference (scribble-seeded)",
}
# Mean field seeded by the scribbles: probability of the scribbled class at labeled pixels.
SEED_CONFIDENCE = 0.9
# DeepLab's kernels (dense_crf_inference's defaults) except the appearance kernel's bandwidths,
# tuned on ACDC training slices (every 160th from the 40th, plus patient001_frame01_slice_4):
# DeepLab's 49 px / 5 gray levels spread the seeds' classes far across the image (mean Dice
# 0.3-0.4 there); 5 px / 15 gray levels give 0.80.
CRF_INFERENCE = {
    "n_iter": 10,
    "w_bilateral": 4.0,
    "theta_alpha": 5.0,
    "theta_beta": 15.0,
    "w_gaussian": 3.0,
    "theta_gamma": 3.0,
}

Method = Callable[[Tensor, Tensor], Tensor]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/acdc-scribble"))
    parser.add_argument("--split", default="val", help="splits/<split>.txt lists the slices")
    parser.add_argument(
        "--every", type=int, default=1, help="use every k-th slice of the split (1 = all)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    parser.add_argument("--output", type=Path, default=None, help="write all scores as JSON")
    parser.add_argument("--device", default="cpu", help="torch device for segment / mean field")
    return parser


def grabcut_pr_bgd(image: Tensor, scribbles: Tensor) -> Tensor:
    """``cv2.grabCut`` one-vs-rest, mask mode, 5 iterations, unlabeled = probable background
    (``scripts/segment_photos.py``'s seeding) on the gray slice repeated to 3 channels."""
    from segment_photos import grabcut_pr_bgd as grabcut

    rgb = image.cpu().numpy().repeat(3 // image.shape[0], axis=0)
    labels = grabcut(rgb, scribbles.cpu().numpy(), NUM_CLASSES)
    return torch.from_numpy(labels).long()


def crf_inference(image: Tensor, scribbles: Tensor) -> Tensor:
    """Mean field from the scribbles alone: confident seeds, uniform elsewhere, seeds clamped."""
    labeled = scribbles != 255
    ids = torch.where(labeled, scribbles, torch.zeros_like(scribbles))
    other = (1 - SEED_CONFIDENCE) / (NUM_CLASSES - 1)
    seed = math.log(SEED_CONFIDENCE / other)  # logit gap giving the seed its confidence
    onehot = torch.nn.functional.one_hot(ids, NUM_CLASSES).movedim(-1, 0).to(image.dtype)
    logits = (seed * onehot * labeled)[None]  # (1, K, H, W): zeros = uniform where unlabeled
    probs = dense_crf_inference(logits, image[None], labels=scribbles[None], **CRF_INFERENCE)
    return probs[0].argmax(dim=0)


def appearance_crf(image: Tensor, scribbles: Tensor) -> Tensor:
    """:func:`weakseg.interactive.segment_image` at its defaults; a slice with one scribbled
    class only (which it refuses) is given that class everywhere, as GrabCut does."""
    present = scribbles[scribbles != 255].unique()
    if len(present) < 2:
        return torch.full_like(scribbles, int(present[0]) if len(present) else 0)
    return torch.from_numpy(
        segment_image(image.cpu().numpy(), scribbles.cpu().numpy(), num_classes=NUM_CLASSES)
    )


def make_methods(names: list[str]) -> dict[str, Method]:
    """The callables ``(image [1, H, W], scribbles [H, W]) -> labels [H, W]`` to compare."""
    methods: dict[str, Method] = {}
    for name in names:
        if name == "appearance_crf":
            methods[name] = appearance_crf
        elif name == "pce":
            methods[name] = lambda image, scribbles: logit_field_segmentation(
                image, scribbles, weight=0.0
            )
        elif name in REGULARIZERS:
            methods[name] = lambda image, scribbles, loss=name: logit_field_segmentation(
                image, scribbles, loss=loss
            )
        elif name == "grabcut":
            methods[name] = lambda image, scribbles: torch.from_numpy(
                grabcut_proposal(image.cpu(), scribbles.cpu(), num_classes=NUM_CLASSES)
            ).long()
        elif name == "grabcut_pr_bgd":
            methods[name] = grabcut_pr_bgd
        elif name == "crf_inference":
            methods[name] = crf_inference
        else:
            raise SystemExit(f"unknown method {name!r}; choose among {', '.join(METHODS)}")
    return methods


def slice_scores(prediction: Tensor, mask: Tensor) -> dict[str, float]:
    """Per-class Dice (foreground), their mean and mIoU; NaN where a class is absent."""
    confusion = confusion_matrix(prediction.cpu(), mask.cpu(), NUM_CLASSES)
    dice = dice_per_class(confusion)[1:]  # NaN for a class absent from mask and prediction
    iou = iou_per_class(confusion)
    scores = {name: float(d) for name, d in zip(FOREGROUND, dice, strict=True)}
    present = dice[~dice.isnan()]
    scores["mean_dice"] = float(present.mean()) if present.numel() else math.nan
    scores["miou"] = float(np.nanmean(iou.numpy()))
    return scores


def json_ready(value: object) -> object:
    """``value`` with every NaN float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_ready(item) for item in value]
    return value


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    header = "| method | mean Dice | Dice RV | Dice MYO | Dice LV | mIoU | s / slice |"
    lines = [header, "|" + "---|" * 7]
    for name, s in summary.items():
        lines.append(
            f"| {LABELS[name]} | {s['mean_dice']:.3f} | {s['right_ventricle']:.3f} | "
            f"{s['myocardium']:.3f} | {s['left_ventricle']:.3f} | {s['miou']:.3f} | "
            f"{s['seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    if args.every < 1:
        raise SystemExit(f"--every must be >= 1, got {args.every}")
    names = (args.data / "splits" / f"{args.split}.txt").read_text().split()[:: args.every]
    methods = make_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    device = torch.device(args.device)
    per_slice: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    print(f"{len(names)} slices of {args.split} (every {args.every}), methods: {list(methods)}")
    for index, slice_id in enumerate(names):
        image = torch.from_numpy(read_image(args.data / "images" / f"{slice_id}.png", channels=1))
        scribbles = torch.from_numpy(read_label(args.data / "scribbles" / f"{slice_id}.png"))
        mask = torch.from_numpy(read_label(args.data / "masks" / f"{slice_id}.png")).long()
        image, scribbles = image.to(device), scribbles.long().to(device)
        row = []
        for name, method in methods.items():
            start = time.perf_counter()
            prediction = method(image, scribbles)
            seconds = time.perf_counter() - start
            scores = slice_scores(prediction, mask)
            per_slice[name].append({"slice": slice_id, "seconds": seconds, **scores})
            row.append(f"{name} {scores['mean_dice']:.3f} ({seconds:.1f}s)")
        print(f"[{index + 1}/{len(names)}] {slice_id}: " + ", ".join(row), flush=True)
    keys = (*FOREGROUND, "mean_dice", "miou", "seconds")
    summary = {
        name: {key: nanmean([r[key] for r in rows]) for key in keys}
        for name, rows in per_slice.items()
    }
    print()
    print(
        f"ACDC {args.split}, {len(names)} slices (every {args.every}-th), from the scribbles only; "
        "mean Dice: per slice over the foreground classes present in mask or prediction, "
        "then averaged over slices"
    )
    print(markdown_table(summary))
    print(f"\ncommand: python {' '.join(sys.argv)}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(["python", *sys.argv]),
            "split": args.split,
            "every": args.every,
            "slices": names,
            "crf_inference": {"seed_confidence": SEED_CONFIDENCE, **CRF_INFERENCE},
            "summary": summary,
            "per_slice": per_slice,
        }
        args.output.write_text(json.dumps(json_ready(payload), indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
