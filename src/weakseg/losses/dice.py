"""The soft Dice loss on the labeled pixels: the second half of the medical field's full-mask
baseline (cross-entropy + Dice, as in nnU-Net and the WSL4MIS fully-supervised U-Net)."""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg._validation import (
    check_bool,
    check_floating,
    check_labels,
    check_ndim,
    check_not_empty,
    check_positive,
    check_tensor,
)
from weakseg.losses._module import WeightedLoss, own_checks

__all__ = ["DiceLoss", "dice_loss"]


def dice_loss(
    probs: Tensor,
    labels: Tensor,
    ignore_index: int = 255,
    *,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> Tensor:
    r"""One minus the mean soft Dice coefficient of the classes, over the labeled pixels of the
    whole batch.

    .. math::
        D_k = \frac{2 \sum_{p \in \Omega_L} S_p^k [Y_p = k] + \epsilon}
                   {\sum_{p \in \Omega_L} S_p^k + \sum_{p \in \Omega_L} [Y_p = k] + \epsilon},
        \qquad \ell = 1 - \frac{1}{|K'|} \sum_{k \in K'} D_k,
        \qquad \Omega_L = \{p : Y_p \neq \text{ignore\_index}\}

    with :math:`K'` the classes ``0..K-1`` (``include_background``) or ``1..K-1``. The sums
    run over every labeled pixel of the batch (a "batch Dice"), so a class absent from one
    slice does not make that slice's coefficient 0 / 0. A class that is neither labeled nor
    predicted on :math:`\Omega_L` scores :math:`D_k = 1`; one that is predicted but never
    labeled scores close to 0, which pushes its probability down. With no labeled pixel the
    value is exactly 0 with a zero gradient. The value lies in [0, 1].

    Args:
        probs: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], class probabilities (softmax).
        labels: Tensor[B, *spatial], integer class ids in ``0..K-1`` or ``ignore_index``.
        ignore_index: label of unlabeled pixels (255 in the ScribbleSup/ACDC format).
        include_background: average over class 0 too (nnU-Net leaves it out, the default).
        smooth: :math:`\epsilon`, added to numerator and denominator.

    Returns:
        Tensor[] (scalar), computed in float32 (or float64 for float64 ``probs``).

    Example:
        >>> labels = torch.tensor([[[0, 1], [1, 255]]])
        >>> probs = torch.nn.functional.one_hot(labels.clamp_max(1), 2).permute(0, 3, 1, 2)
        >>> float(dice_loss(probs.float(), labels)) < 1e-6
        True
    """
    check_tensor("probs", probs)
    check_ndim("probs", probs, (4, 5), "[B, K, H, W] or [B, K, D, H, W]")
    check_not_empty("probs", probs)
    check_floating("probs", probs)
    check_labels(labels, probs, ignore_index)
    include_background = check_bool("include_background", include_background)
    smooth = check_positive("smooth", smooth)
    num_classes = probs.shape[1]
    if num_classes < 2 and not include_background:
        raise ValueError(
            f"dice_loss without the background needs at least 2 classes, got probs of shape "
            f"{tuple(probs.shape)}"
        )
    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs = probs.to(dtype)
        labels = labels.long()
        labeled = (labels != ignore_index).unsqueeze(1)  # [B, 1, *spatial]
        classes = torch.arange(num_classes, device=probs.device)
        shape = (1, num_classes) + (1,) * (labels.ndim - 1)
        target = (labels.unsqueeze(1) == classes.view(shape)) & labeled  # [B, K, *spatial]
        reduce = [0, *range(2, probs.ndim)]
        masked = torch.where(labeled, probs, probs.new_zeros(()))
        overlap = (masked * target).sum(reduce)  # [K]
        size = masked.sum(reduce) + target.sum(reduce).to(dtype)
        dice = (2 * overlap + smooth) / (size + smooth)
        if not include_background:
            dice = dice[1:]
        return 1 - dice.mean()


class DiceLoss(WeightedLoss):
    """``weight * dice_loss(probs, labels, ...)``: with full masks and ``weight: 1``, pCE + Dice
    is the field's cross-entropy + Dice baseline.

    Example:
        >>> criterion = DiceLoss(weight=1.0)
        >>> labels = torch.tensor([[[0, 1], [1, 0]]])
        >>> criterion(torch.full((1, 2, 2, 2), 0.5), labels)
        tensor(0.5000)
    """

    function = staticmethod(dice_loss)
    checks = own_checks(include_background=check_bool, smooth=check_positive)
