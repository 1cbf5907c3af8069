r"""Dense Gaussian regularizer values (CRF cut and normalized cut) for ``segment_image``.

Used by :func:`weakseg.segment_image`, which optimizes a free logit field for many steps on one
image: unlike the loss functions of :mod:`weakseg.losses` (one lattice per call), this takes a
filter built once and reuses it for every step. With :math:`d = W\mathbf 1`:

.. math::
    R_{CRF}(S) = \frac{\sum_k S_k^\top W (\mathbf 1 - S_k)}{\mathbf 1^\top W \mathbf 1},\qquad
    R_{NC}(S) = \sum_k \frac{S_k^\top W (\mathbf 1 - S_k)}{d^\top S_k}.

Both come from one filtering of ``[S, 1]`` (K + 1 channels); W includes the self term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from weakseg.filtering import PermutohedralLattice, dense_gaussian_filter

__all__ = ["gaussian_cut_terms", "gaussian_filter_for"]


def gaussian_filter_for(features: Tensor, backend: str) -> Callable[[Tensor], Tensor]:
    """``v -> W v`` for scaled ``features [B, D, *spatial]``; build once, call many times."""
    features = features.detach()
    if backend == "lattice":
        return PermutohedralLattice(features)
    return lambda values: dense_gaussian_filter(values, features)


def gaussian_cut_terms(
    probs: Tensor, gaussian_filter: Callable[[Tensor], Tensor], *, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Return ``(R_CRF, R_NC)``, each Tensor[B], differentiable w.r.t. ``probs``.

    Args:
        probs: Tensor[B, K, *spatial], softmax probabilities S.
        gaussian_filter: ``v -> W v`` from :func:`gaussian_filter_for`.
        valid: optional Tensor[B, 1, *spatial] of 0/1: pixels outside are removed from the graph.
    """
    ones = torch.ones_like(probs[:, :1])
    if valid is not None:
        probs = probs * valid
        ones = ones * valid
    values = torch.cat([probs, ones], dim=1)  # (B, K + 1, *spatial)
    filtered = gaussian_filter(values)
    w_s, degree = filtered[:, :-1], filtered[:, -1:]  # (B, K, *), (B, 1, *)
    cut = (probs * (degree - w_s)).flatten(2).sum(dim=2)  # (B, K): S_k' W (1 - S_k)
    assoc = (probs * degree).flatten(2).sum(dim=2)  # (B, K): d' S_k
    total = (ones * degree).flatten(1).sum(dim=1)  # (B,): 1' W 1
    crf = cut.sum(dim=1) / total.clamp_min(torch.finfo(total.dtype).tiny)
    nc = (cut / assoc.clamp_min(torch.finfo(assoc.dtype).eps)).sum(dim=1)
    return crf, nc
