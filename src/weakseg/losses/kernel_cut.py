"""The kernel cut loss, eq. (6): dense CRF plus gamma times normalized cut."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from weakseg._validation import check_choice, check_nonnegative, check_positive
from weakseg.losses._affinity import (
    NORMALIZATIONS,
    Affinity,
    Backend,
    Normalization,
    affinity_mass,
    broadcast_grad,
    crf_grad,
    crf_value,
    filter_segments,
    gaussian_affinity,
    nc_grad,
    nc_terms,
    nc_value,
)
from weakseg.losses._module import WeightedLoss, choice, own_checks
from weakseg.losses.affinity import (
    GaussianAffinity,
    check_affinity,
    check_dense_arguments,
    dense_inputs,
)

__all__ = ["KernelCutLoss", "kernel_cut_loss"]


class _KernelCutFunction(torch.autograd.Function):
    """Per-image values ``[B]``. With ``nc_affinity is crf_affinity`` one filtering serves both."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        segmentation: Tensor,
        mask: Tensor,
        crf_affinity: Affinity,
        nc_affinity: Affinity,
        gamma: float,
        normalization: str,
    ) -> Tensor:
        ws, degree = filter_segments(crf_affinity, segmentation, mask, with_degree=True)
        if nc_affinity is crf_affinity:
            nc_ws, nc_degree = ws, degree
        else:
            nc_ws, nc_degree = filter_segments(nc_affinity, segmentation, mask, with_degree=True)
        mass = affinity_mass(mask, degree) if normalization == "affinity" else None
        association, volume = nc_terms(segmentation, nc_ws, nc_degree)
        ctx.gamma, ctx.normalization = gamma, normalization
        ctx.save_for_backward(ws, degree, mass, nc_ws, nc_degree, association, volume)
        crf = crf_value(segmentation, ws, degree, mass, normalization)
        return crf + gamma * nc_value(association, volume)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_value: Tensor) -> tuple[Tensor | None, ...]:
        ws, degree, mass, nc_ws, nc_degree, association, volume = ctx.saved_tensors
        grad = crf_grad(ws, degree, mass, ctx.normalization)
        grad = grad + ctx.gamma * nc_grad(nc_ws, nc_degree, association, volume)
        return broadcast_grad(grad_value, grad), None, None, None, None, None


def kernel_cut_loss(
    images: Tensor,
    probs: Tensor,
    valid_mask: Tensor | None = None,
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    nc_sigma_rgb: float | None = None,
    nc_sigma_xy: float | None = None,
    gamma: float = 1.0,
    scale_factor: float = 1.0,
    spacing: Sequence[float] | None = None,
    normalization: Normalization = "affinity",
    backend: Backend = "lattice",
    affinity: GaussianAffinity | None = None,
    nc_affinity: GaussianAffinity | None = None,
) -> Tensor:
    r"""Kernel cut loss: dense CRF plus gamma times normalized cut, eq. (6).

    .. math::
        R_{KC}(S) = \sum_k S_k^\top W (\mathbf{1} - S_k)
            + \gamma \sum_k \frac{S_k^\top \hat W (\mathbf{1} - S_k)}{\hat d^\top S_k},
        \qquad \hat d = \hat W \mathbf{1}

    ``W`` has bandwidths ``(sigma_rgb, sigma_xy)``, ``\hat W`` has ``(nc_sigma_rgb,
    nc_sigma_xy)`` (each defaults to its CRF counterpart); when both coincide a single affinity
    and a single filtering of K + 1 channels serve both terms. ``valid_mask`` excludes pixels
    from both terms as in :func:`dense_crf_loss`.

    ``normalization`` applies to the CRF term exactly as in :func:`dense_crf_loss`; the NC term
    is scale-free (in [0, K - 1]). So, per image and then averaged over the batch, the value is
    in ``[0, 1 - 1/K + gamma (K - 1)]`` with ``"affinity"`` (the default; gamma of order 1 then
    balances the two terms), ``R_CRF + gamma R_NC >= 0`` with ``"none"``, and
    ``-sum_k S_k'W S_k + gamma R_NC`` (of either sign, dominated by the CRF term) with ``"rloss"``.

    The gradient is eq. (12) (with eq. (11)'s CRF part as in :func:`dense_crf_loss`), from the
    forward's filtered maps; no gradient flows into ``images``; float32 under autocast.

    Args:
        images: Tensor[B, C, H, W] or Tensor[B, C, D, H, W], intensities in 0-255.
        probs: Tensor[B, K, *spatial], softmax probabilities.
        valid_mask: Tensor[B, *spatial] bool, False at pixels to exclude.
        sigma_rgb, sigma_xy: bandwidths of the CRF affinity ``W``.
        nc_sigma_rgb, nc_sigma_xy: bandwidths of the NC affinity; None = the CRF ones.
        gamma: weight of the normalized cut term (>= 0).
        scale_factor: resize before the loss as in :func:`dense_crf_loss` (both ``sigma_xy``
            are multiplied by it).
        spacing: physical pixel/voxel size along each spatial axis.
        normalization: ``"affinity"``, ``"none"`` or ``"rloss"`` for the CRF term.
        backend: ``"lattice"`` or ``"exact"``.
        affinity: a prebuilt :class:`~weakseg.losses.GaussianAffinity` for ``W`` (as in
            :func:`dense_crf_loss`).
        nc_affinity: a prebuilt one for ``\hat W``; by default ``affinity`` when the NC
            bandwidths are the CRF ones, else built here.

    Returns:
        Tensor[] (scalar), in the range given above for its ``normalization``.

    Raises:
        ValueError, TypeError: on bad inputs, as :func:`dense_crf_loss` (same checks, same
        0-255 image range and [0, 1] warning).

    Example:
        >>> images = torch.rand(1, 3, 32, 32) * 255
        >>> probs = torch.randn(1, 2, 32, 32).softmax(dim=1)
        >>> bool(0 <= kernel_cut_loss(images, probs, gamma=0.5) <= 0.5 + 0.5 * 1)
        True
    """
    sigma_rgb, sigma_xy = check_dense_arguments(images, probs, backend, sigma_rgb, sigma_xy)
    check_choice("normalization", normalization, NORMALIZATIONS)
    nc_sigma_rgb = (
        sigma_rgb if nc_sigma_rgb is None else check_positive("nc_sigma_rgb", nc_sigma_rgb)
    )
    nc_sigma_xy = sigma_xy if nc_sigma_xy is None else check_positive("nc_sigma_xy", nc_sigma_xy)
    gamma = check_nonnegative("gamma", gamma)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        images, segmentation, mask, crf_affinity = dense_inputs(
            images, probs, valid_mask, affinity, sigma_rgb, sigma_xy, scale_factor, spacing, backend
        )
        same = (nc_sigma_rgb, nc_sigma_xy) == (sigma_rgb, sigma_xy)
        if nc_affinity is not None:
            check_affinity(nc_affinity, segmentation, scale_factor)
        elif same:
            nc_affinity = crf_affinity
        else:
            sigma = nc_sigma_xy * float(scale_factor)
            nc_affinity = gaussian_affinity(images, nc_sigma_rgb, sigma, spacing, backend)
        values = _KernelCutFunction.apply(
            segmentation, mask, crf_affinity, nc_affinity, gamma, normalization
        )
        return values.mean()


class KernelCutLoss(WeightedLoss):
    """``weight * kernel_cut_loss(images, probs, valid_mask, affinity=None, nc_affinity=None,
    ...)``.

    Example:
        >>> criterion = KernelCutLoss(weight=1.0, gamma=0.5, nc_sigma_xy=40.0)
        >>> criterion(torch.rand(1, 3, 16, 16) * 255, torch.full((1, 2, 16, 16), 0.5)).shape
        torch.Size([])
    """

    function = staticmethod(kernel_cut_loss)
    call_arguments = ("affinity", "nc_affinity")
    checks = own_checks(normalization=choice(NORMALIZATIONS))
