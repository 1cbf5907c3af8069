"""Partial cross-entropy: the ground-truth loss of eq. (2) on the labeled pixels only."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from weakseg._validation import check_labels, check_ndim, check_not_empty, check_tensor

__all__ = ["PartialCrossEntropy", "partial_cross_entropy"]


def partial_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    r"""Cross-entropy averaged over the labeled pixels (scribbles, clicks), eq. (2).

    .. math::
        \ell(S, Y) = -\frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} \log S_p^{Y_p},
        \qquad S = \mathrm{softmax}(\text{logits}),
        \quad \Omega_L = \{p : Y_p \neq \text{ignore\_index}\}

    Equals ``F.cross_entropy(logits, labels, ignore_index=ignore_index)`` whenever some pixel
    is labeled; when none is, the value is exactly 0 with a zero gradient (never NaN), so a batch
    of unlabeled images can go through the same training step. The value is >= 0.

    Args:
        logits: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], unnormalized class scores.
        labels: Tensor[B, *spatial], integer class ids in ``0..K-1`` or ``ignore_index``.
        ignore_index: label of unlabeled pixels (255 in the ScribbleSup/ACDC format).

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
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / labeled.sum().clamp_min(1)


class PartialCrossEntropy(nn.Module):
    """``partial_cross_entropy(logits, labels, ignore_index)`` as a module.

    Example:
        >>> criterion = PartialCrossEntropy(ignore_index=255)
        >>> labels = torch.full((1, 4, 4), 255)
        >>> labels[0, 0, 0] = 1
        >>> criterion(torch.zeros(1, 2, 4, 4), labels)
        tensor(0.6931)
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return partial_cross_entropy(logits, labels, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
