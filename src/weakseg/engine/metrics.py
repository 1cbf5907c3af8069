"""Segmentation metrics from a confusion matrix: IoU, mIoU, pixel accuracy, Dice.

``confusion[t, p]`` counts the pixels of true class ``t`` predicted as ``p``; pixels whose target
is ``ignore_index`` are not counted. A class that appears neither in the targets nor in the
predictions has an undefined (NaN) IoU and Dice and is left out of the means, as in the PASCAL VOC
and ACDC evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from scipy import ndimage
from torch import Tensor

__all__ = [
    "ConfusionMatrix",
    "boundary_band",
    "confusion_matrix",
    "dice_per_class",
    "iou_per_class",
    "mean_dice",
    "mean_iou",
    "pixel_accuracy",
    "summarize",
]


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Confusion matrix of a batch of label maps.

    Args:
        pred: Tensor[*] integer predicted class ids in ``0..K-1``.
        target: Tensor[*] (same shape) true class ids, or ``ignore_index``.
        num_classes: ``K``.
        ignore_index: target value of pixels not evaluated.

    Returns:
        int64 Tensor[K, K], ``[true, predicted]``, on the device of ``pred``.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    bad_target = (target < 0) | (target >= num_classes)
    bad_pred = (pred < 0) | (pred >= num_classes)
    if bool(bad_target.any() or bad_pred.any()):
        values = torch.unique(torch.cat([target[bad_target], pred[bad_pred]])).tolist()
        raise ValueError(
            f"class ids must be in 0..{num_classes - 1} (or ignore_index={ignore_index} in the "
            f"target), got {values[:10]}"
        )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)


def iou_per_class(confusion: Tensor) -> Tensor:
    """``TP / (TP + FP + FN)`` per class: float64 Tensor[K], NaN for absent classes."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return tp / union  # 0/0 = NaN for a class absent from targets and predictions


def dice_per_class(confusion: Tensor) -> Tensor:
    """``2 TP / (2 TP + FP + FN)`` per class: float64 Tensor[K], NaN for absent classes."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    return 2 * tp / (confusion.sum(0) + confusion.sum(1))


def mean_iou(confusion: Tensor) -> float:
    """Mean IoU over the classes present in targets or predictions."""
    return _nanmean(iou_per_class(confusion))


def mean_dice(confusion: Tensor, exclude: Sequence[int] = (0,)) -> float:
    """Mean Dice over the classes present, leaving out ``exclude`` (the background, class 0)."""
    dice = dice_per_class(confusion)
    keep = [k for k in range(dice.numel()) if k not in set(exclude)]
    return _nanmean(dice[keep]) if keep else float("nan")


def pixel_accuracy(confusion: Tensor) -> float:
    """Fraction of the evaluated pixels that are correctly classified (NaN if none)."""
    total = confusion.sum()
    return float(confusion.diagonal().sum().double() / total) if total > 0 else float("nan")


def _nanmean(values: Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


def summarize(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, object]:
    """Every metric of a confusion matrix ``[K, K]`` as a JSON-friendly dict (NaN -> None).

    Keys: ``miou``, ``pixel_accuracy``, ``mean_dice`` (foreground: all classes but 0),
    ``iou`` and ``dice`` (per class name), ``pixels`` (number of evaluated pixels).
    """
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for a {num_classes}-class matrix")
    iou, dice = iou_per_class(confusion).tolist(), dice_per_class(confusion).tolist()
    return {
        "miou": _json_float(mean_iou(confusion)),
        "pixel_accuracy": _json_float(pixel_accuracy(confusion)),
        "mean_dice": _json_float(mean_dice(confusion)),
        "iou": {n: _json_float(v) for n, v in zip(names, iou, strict=True)},
        "dice": {n: _json_float(v) for n, v in zip(names, dice, strict=True)},
        "pixels": int(confusion.sum()),
    }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches (and processes, see :meth:`reduce`).

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 255]]))
        >>> cm.summary()["pixel_accuracy"]
        1.0
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` integer Tensors of the same shape."""
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix = self.matrix.to(batch.device) + batch

    def reduce(self) -> None:
        """Sum the matrices of every process (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, object]:
        """:func:`summarize` of the accumulated matrix."""
        return summarize(self.matrix.cpu(), class_names)


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Bool ``[H, W]``: the pixels within ``width`` px (8-connected steps) of a label change of
    ``mask [H, W]`` (both sides of every boundary; ``width=0``: the boundary pixels only)."""
    edges = np.zeros(mask.shape, bool)
    vertical = mask[:-1] != mask[1:]
    horizontal = mask[:, :-1] != mask[:, 1:]
    edges[:-1] |= vertical
    edges[1:] |= vertical
    edges[:, :-1] |= horizontal
    edges[:, 1:] |= horizontal
    if width < 1 or not edges.any():
        return edges
    return ndimage.binary_dilation(edges, iterations=width)
