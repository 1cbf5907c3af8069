r"""SEC's seeding loss: cross-entropy on sparse localization cues (Kolesnikov & Lampert, 2016).

Cues are a tensor ``[B, K, *spatial]`` (bool or 0/1, several classes per pixel allowed), or a cue
label map ``[B, *spatial]`` (one class id per pixel, ``255`` = no cue) turned into one by
:func:`cues_from_labels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import (
    check_same_device,
    check_tensor,
)
from weakseg.losses._affinity import check_probs
from weakseg.losses._module import WeightedLoss
from weakseg.losses._sec_common import check_binary, compute_dtype, safe_log

__all__ = ["NO_CUE", "SeedingLoss", "cues_from_labels", "seeding_loss"]

NO_CUE = 255


def check_cues(cues: Tensor, probs: Tensor) -> Tensor:
    check_tensor("cues", cues)
    if tuple(cues.shape) != tuple(probs.shape):
        raise ValueError(
            f"cues must have the shape of probs [B, K, *spatial] = {tuple(probs.shape)}, got "
            f"{tuple(cues.shape)}; for a label map [B, *spatial] use cues_from_labels()"
        )
    check_same_device("cues", cues, "probs", probs)
    return check_binary("cues", cues, "[B, K, *spatial]")


def cues_from_labels(labels: Tensor, num_classes: int, ignore_index: int = NO_CUE) -> Tensor:
    """Localization cues ``bool [B, K, *spatial]`` from a cue label map ``[B, *spatial]``.

    ``labels`` holds one class id per pixel (``0..K-1``) and ``ignore_index`` where there is no
    cue, i.e. the format of the PNGs read by :func:`load_cues`.

    Raises:
        TypeError: ``labels`` is not an integer tensor.
        ValueError: ``num_classes < 1`` or a value outside ``0..K-1`` other than ``ignore_index``.

    Example:
        >>> cues_from_labels(torch.tensor([[[0, 255], [1, 1]]]), 2)[0, 1]
        tensor([[False, False],
                [ True,  True]])
    """
    check_tensor("labels", labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class ids, got {labels.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    labels = labels.long()
    cue = labels != ignore_index
    bad = cue & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = sorted({int(v) for v in labels[bad].unique()[:10].tolist()})
        raise ValueError(
            f"labels holds class ids {values} outside 0..{num_classes - 1} "
            f"(num_classes={num_classes}, ignore_index={ignore_index})"
        )
    ids = torch.where(cue, labels, torch.zeros_like(labels))
    onehot = F.one_hot(ids, num_classes).movedim(-1, 1).bool()  # (B, K, *spatial)
    return onehot & cue.unsqueeze(1)


def seeding_loss(probs: Tensor, cues: Tensor) -> Tensor:
    r"""Seeding loss: cross-entropy of ``probs`` on the localization cues.

    .. math::
        L_{seed}(S, C) = -\frac{1}{B} \sum_b \frac{1}{\sum_{k,p} C_{bkp}}
                         \sum_{k} \sum_{p} C_{bkp} \log S_{bkp}

    the mean of :math:`-\log S` over the (pixel, class) pairs of each image's cues, averaged
    over the batch. An image without any cue contributes 0 (it still counts in the average).

    Args:
        probs: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], softmax probabilities.
        cues: Tensor[B, K, *spatial] bool or 0/1, True where pixel ``p`` is a seed of class
            ``k`` (see :func:`cues_from_labels` / :func:`load_cues`).

    Returns:
        Tensor[] (scalar), float32 (float64 for float64 ``probs``).

    Raises:
        ValueError: ``probs`` not probabilities, ``cues`` of another shape or device or with
            values other than 0/1.
        TypeError: non-tensor inputs, integer ``probs``.

    Example:
        >>> probs = torch.full((1, 2, 4, 4), 0.5)
        >>> cues = torch.zeros(1, 2, 4, 4, dtype=torch.bool); cues[0, 1, 0, 0] = True
        >>> seeding_loss(probs, cues)  # -log(0.5)
        tensor(0.6931)
    """
    check_probs(probs, None)
    cues = check_cues(cues, probs)
    probs = probs.to(compute_dtype(probs))
    # where, not a product: -log(0) at a non-cue pixel must not turn into 0 * inf = NaN.
    terms = torch.where(cues, -safe_log(probs), 0)  # (B, K, *spatial)
    total = terms.flatten(1).sum(dim=1)  # (B,)
    count = cues.flatten(1).sum(dim=1).clamp_min(1).to(total.dtype)  # (B,)
    return (total / count).mean()


class SeedingLoss(WeightedLoss):
    """``weight * seeding_loss(probs, cues)``; see :func:`seeding_loss`."""

    function = staticmethod(seeding_loss)
