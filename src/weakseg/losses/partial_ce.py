"""Partial cross-entropy: the ground-truth loss of eq. (2) on the labeled pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg._validation import check_labels, check_ndim, check_not_empty, check_tensor

__all__ = ["PartialCrossEntropy", "partial_cross_entropy"]


def partial_cross_entropy(
    logits: Tensor, labels: Tensor, ignore_index: int = 255, *, class_balanced: bool = False
) -> Tensor:
    r"""Cross-entropy averaged over the labeled pixels (scribbles, clicks), eq. (2).

    .. math::
        \ell(S, Y) = -\frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} \log S_p^{Y_p},
        \qquad S = \mathrm{softmax}(\text{logits}),
        \quad \Omega_L = \{p : Y_p \neq \text{ignore\_index}\}

    Equals ``F.cross_entropy(logits, labels, ignore_index=ignore_index)`` whenever some pixel
    is labeled; when none is, the value is exactly 0 with a zero gradient (never NaN), so a batch
    of unlabeled images can go through the same training step. The value is >= 0.

    With ``class_balanced``, each class present in the batch weighs the same: the mean over
    those classes of the mean cross-entropy of their labeled pixels,
    :math:`\frac{1}{|K_L|} \sum_{k \in K_L} \frac{1}{|\Omega_k|} \sum_{p \in \Omega_k}
    -\log S_p^k` (``F.cross_entropy`` with class weights :math:`1 / |\Omega_k|`), so that a
    class labeled on many more pixels (a background that a prior labels wholesale) does not
    drown the others.

    Args:
        logits: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], unnormalized class scores.
        labels: Tensor[B, *spatial], integer class ids in ``0..K-1`` or ``ignore_index``.
        ignore_index: label of unlabeled pixels (255 in the ScribbleSup/ACDC format).
        class_balanced: average per class, then over the classes (see above).

    Returns:
        Tensor[] (scalar).

    Example:
        >>> logits = torch.randn(2, 3, 8, 8)
        >>> labels = torch.full((2, 8, 8), 255)
        >>> partial_cross_entropy(logits, labels)
        tensor(0.)
    """
    check_tensor("logits", logits)
    check_ndim("logits", logits, (4, 5), "[B, K, H, W] or [B, K, D, H, W]")
    check_not_empty("logits", logits)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    check_labels(labels, logits, ignore_index)
    labels = labels.long()
    labeled = labels != ignore_index
    if not class_balanced:
        total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
        return total / labeled.sum().clamp_min(1)
    num_classes = logits.shape[1]
    pixel_ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    classes = torch.where(labeled, labels, num_classes).reshape(-1)  # K: a bin for unlabeled
    counts = torch.bincount(classes, minlength=num_classes + 1)[:num_classes]
    sums = pixel_ce.new_zeros(num_classes + 1).index_add_(0, classes, pixel_ce.reshape(-1))
    per_class = sums[:num_classes] / counts.clamp_min(1)
    return per_class.sum() / (counts > 0).sum().clamp_min(1)


class PartialCrossEntropy(nn.Module):
    """``partial_cross_entropy(logits, labels, ignore_index, class_balanced=...)`` as a module.

    Example:
        >>> criterion = PartialCrossEntropy(ignore_index=255)
        >>> labels = torch.full((1, 4, 4), 255)
        >>> labels[0, 0, 0] = 1
        >>> criterion(torch.zeros(1, 2, 4, 4), labels)
        tensor(0.6931)
    """

    def __init__(self, ignore_index: int = 255, *, class_balanced: bool = False) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        if not isinstance(class_balanced, bool):
            raise TypeError(f"class_balanced must be True or False, got {class_balanced!r}")
        self.class_balanced = class_balanced

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return partial_cross_entropy(
            logits, labels, self.ignore_index, class_balanced=self.class_balanced
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, class_balanced={self.class_balanced}"
