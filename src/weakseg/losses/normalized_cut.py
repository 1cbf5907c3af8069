"""The normalized cut loss, eq. (5): each segment's cut over its weighted size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from weakseg.losses._affinity import (
    Affinity,
    Backend,
    broadcast_grad,
    filter_segments,
    nc_grad,
    nc_terms,
    nc_value,
)
from weakseg.losses._module import WeightedLoss
from weakseg.losses.affinity import GaussianAffinity, check_dense_arguments, dense_inputs

__all__ = ["NormalizedCutLoss", "normalized_cut_loss"]


class _NormalizedCutFunction(torch.autograd.Function):
    """Per-image values ``[B]``; the backward reuses the forward's ``W S`` and ``d = W m``."""

    @staticmethod
    def forward(ctx: FunctionCtx, segmentation: Tensor, mask: Tensor, affinity: Affinity) -> Tensor:
        ws, degree = filter_segments(affinity, segmentation, mask, with_degree=True)
        association, volume = nc_terms(segmentation, ws, degree)
        ctx.save_for_backward(ws, degree, association, volume)
        return nc_value(association, volume)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_value: Tensor) -> tuple[Tensor | None, ...]:
        ws, degree, association, volume = ctx.saved_tensors
        grad = nc_grad(ws, degree, association, volume)
        return broadcast_grad(grad_value, grad), None, None


def normalized_cut_loss(
    images: Tensor,
    probs: Tensor,
    valid_mask: Tensor | None = None,
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    scale_factor: float = 1.0,
    spacing: Sequence[float] | None = None,
    backend: Backend = "lattice",
    affinity: GaussianAffinity | None = None,
) -> Tensor:
    r"""Normalized cut loss: the soft normalized cut of the segmentation, eq. (5).

    .. math::
        R_{NC}(S) = \sum_k \frac{S_k^\top W (\mathbf{1} - S_k)}{d^\top S_k},
        \qquad d = W \mathbf{1}

    ``W`` is the dense intensity-position Gaussian of :func:`dense_crf_loss` (self term included).
    ``valid_mask`` works as there: excluded pixels are zero in ``S`` and in ``1``, so they add
    nothing to any cut, and the degrees ``d`` count valid neighbours only.

    The value is the mean over the batch of per-image values, each >= 0 and at most ``K - 1``
    (reached by uniform probabilities); it is invariant to the scale of ``W`` and needs no
    normalization. Each class term is 1 minus the fraction of the segment's volume that stays
    inside it, so a class with almost no mass still costs up to 1. A class with no mass at all
    (``d'S_k = 0``) adds 0.

    The gradient is eq. (12), :math:`\frac{S_k^\top W S_k}{(d^\top S_k)^2} d -
    \frac{2 W S_k}{d^\top S_k}`, from the forward's ``W S`` and ``d`` (one filtering of K + 1
    channels in total). No gradient flows into ``images``; float32 under autocast.

    Args:
        images: Tensor[B, C, H, W] or Tensor[B, C, D, H, W], intensities in 0-255.
        probs: Tensor[B, K, *spatial], softmax probabilities.
        valid_mask: Tensor[B, *spatial] bool, False at pixels to exclude.
        sigma_rgb, sigma_xy: bandwidths of ``W`` (intensity in 0-255 units; pixels or the units
            of ``spacing``).
        scale_factor: resize before the loss as in :func:`dense_crf_loss`.
        spacing: physical pixel/voxel size along each spatial axis.
        backend: ``"lattice"`` or ``"exact"``.
        affinity: a prebuilt :class:`~weakseg.losses.GaussianAffinity`, as in
            :func:`dense_crf_loss`.

    Returns:
        Tensor[] (scalar) in [0, K - 1].

    Raises:
        ValueError, TypeError: on bad inputs, as :func:`dense_crf_loss` (same checks, same
        0-255 image range and [0, 1] warning).

    Example:
        >>> images = torch.rand(1, 1, 32, 32) * 255
        >>> probs = torch.randn(1, 3, 32, 32).softmax(dim=1)
        >>> bool(0 <= normalized_cut_loss(images, probs) <= 2)
        True
    """
    sigma_rgb, sigma_xy = check_dense_arguments(images, probs, backend, sigma_rgb, sigma_xy)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        _, segmentation, mask, weights = dense_inputs(
            images, probs, valid_mask, affinity, sigma_rgb, sigma_xy, scale_factor, spacing, backend
        )
        return _NormalizedCutFunction.apply(segmentation, mask, weights).mean()


class NormalizedCutLoss(WeightedLoss):
    """``weight * normalized_cut_loss(images, probs, valid_mask, affinity=None, ...)``.

    Example:
        >>> criterion = NormalizedCutLoss(weight=0.5, sigma_rgb=15.0, sigma_xy=40.0)
        >>> criterion(torch.rand(1, 3, 16, 16) * 255, torch.full((1, 2, 16, 16), 0.5)).shape
        torch.Size([])
    """

    function = staticmethod(normalized_cut_loss)
    call_arguments = ("affinity",)
