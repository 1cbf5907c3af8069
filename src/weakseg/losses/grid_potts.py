"""The grid Potts loss: eq. (4) with the sparse, contrast-sensitive nearest-neighbour W."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from weakseg._validation import check_choice, check_positive, check_tensor
from weakseg.losses._affinity import (
    NORMALIZATIONS,
    Normalization,
    prepare_inputs,
    spatial_sum,
)
from weakseg.losses._module import WeightedLoss, choice, own_checks

__all__ = ["GridPottsLoss", "grid_potts_loss"]

_CONNECTIVITIES = {2: (4, 8), 3: (6, 26)}


def _half_neighbourhood(ndim: int, connectivity: int | None) -> list[tuple[int, ...]]:
    """One offset of each neighbour pair {o, -o}: those whose first non-zero entry is +1."""
    allowed = _CONNECTIVITIES[ndim]
    if connectivity is None:
        connectivity = allowed[0]
    if connectivity not in allowed:
        raise ValueError(
            f"connectivity must be 4 or 8 for 2D images and 6 or 26 for 3D volumes, "
            f"got {connectivity!r} for a {ndim}D input"
        )
    full = connectivity == allowed[1]
    zero = (0,) * ndim
    return [
        offset
        for offset in itertools.product((-1, 0, 1), repeat=ndim)
        if offset > zero and (full or sum(map(abs, offset)) == 1)
    ]


def _check_connectivity(name: str, connectivity: int | None) -> int | None:
    """None or one of the connectivities of 2D or 3D grids (which one fits is known at the call)."""
    if connectivity not in (None, 4, 8, 6, 26):
        raise ValueError(f"{name} must be None, 4, 8, 6 or 26, got {connectivity!r}")
    return connectivity


def _pair_slices(offset: Sequence[int], shape: Sequence[int]) -> tuple[tuple, tuple] | None:
    """Index tuples selecting p and p + offset for every p whose neighbour lies inside."""
    first, second = [Ellipsis], [Ellipsis]
    for step, size in zip(offset, shape, strict=True):
        if size - abs(step) < 1:
            return None
        first.append(slice(max(0, -step), size - max(0, step)))
        second.append(slice(max(0, step), size - max(0, -step)))
    return tuple(first), tuple(second)


def grid_potts_loss(
    images: Tensor,
    probs: Tensor,
    valid_mask: Tensor | None = None,
    *,
    sigma_rgb: float = 15.0,
    connectivity: int | None = None,
    spacing: Sequence[float] | None = None,
    normalization: Normalization = "affinity",
) -> Tensor:
    r"""Grid Potts loss: the relaxed Potts energy over nearest neighbours (section 2.1, sparse W).

    .. math::
        R(S) = \sum_k S_k^\top W (\mathbf{1} - S_k), \qquad
        W_{pq} = \frac{[q \in \mathcal{N}(p)]}{\mathrm{dist}(p, q)}
                 \exp\Big(-\frac{|I_p - I_q|^2}{2\sigma_{rgb}^2}\Big)

    ``N(p)`` is the 4- or 8-neighbourhood in 2D (6 or 26 in 3D), ``dist`` the Euclidean
    distance in units of ``spacing`` (1 and sqrt(2) for square pixels); ``W`` has no self term.
    The sum runs over ordered pairs, so each neighbour pair counts twice, as in eq. (4). A pair
    counts only when both pixels are valid; excluded pixels have a zero gradient.

    Normalizations, per image then averaged over the batch, as in :func:`dense_crf_loss`:
    ``"affinity"`` (default) divides by :math:`\mathbf{1}^\top W \mathbf{1}`: the fraction of
    edge weight cut, in [0, 1] for softmax inputs (0 for a hard segmentation without cut edges,
    1 - 1/K for uniform probabilities, up to 1 when neighbours disagree; unlike the dense ``W``
    this one has no self term), ``"none"`` gives :math:`R` (>= 0),
    ``"rloss"`` gives :math:`-\sum_k S_k^\top W S_k` (<= 0, same gradient through a softmax).

    Computed with shifted views in O(N K) per neighbour offset; gradients by autograd (none into
    ``images``); float32 under autocast.

    Args:
        images: Tensor[B, C, H, W] or Tensor[B, C, D, H, W], intensities in 0-255.
        probs: Tensor[B, K, *spatial], softmax probabilities.
        valid_mask: Tensor[B, *spatial] bool, False at pixels to exclude.
        sigma_rgb: contrast bandwidth, in 0-255 units, over all image channels.
        connectivity: 4 or 8 (2D), 6 or 26 (3D); None = 4 or 6.
        spacing: physical pixel/voxel size along each spatial axis (scales ``dist``).
        normalization: ``"affinity"``, ``"none"`` or ``"rloss"``.

    Returns:
        Tensor[] (scalar), in [0, 1] with ``"affinity"``.

    Raises:
        ValueError: a ``connectivity`` that does not fit the input's dimension, a ``spacing``
            of another length than the spatial dims or not positive.
        ValueError, TypeError: bad images or probabilities, as :func:`dense_crf_loss` (same
            checks, same 0-255 image range and [0, 1] warning).

    Example:
        >>> images = torch.rand(1, 3, 16, 16) * 255
        >>> probs = torch.randn(1, 2, 16, 16).softmax(dim=1)
        >>> bool(0 <= grid_potts_loss(images, probs, connectivity=8) <= 1)
        True
    """
    check_tensor("images", images)
    check_tensor("probs", probs)
    check_choice("normalization", normalization, NORMALIZATIONS)
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        images, segmentation, mask = prepare_inputs(images, probs, valid_mask, 1.0)
        ndim = segmentation.ndim - 2
        offsets = _half_neighbourhood(ndim, connectivity)
        if spacing is None:
            spacing = (1.0,) * ndim
        spacing = tuple(spacing)
        if len(spacing) != ndim:
            raise ValueError(
                f"spacing must give one value per spatial axis ({ndim}), got {len(spacing)}: "
                f"{spacing}"
            )
        spacing = tuple(check_positive(f"spacing[{i}]", s) for i, s in enumerate(spacing))
        batch = probs.shape[0]
        cut = segmentation.new_zeros(batch)  # S'W(m - S), summed over k
        association = segmentation.new_zeros(batch)  # S'W S, summed over k
        total = segmentation.new_zeros(batch)  # m'W m
        for offset in offsets:
            pair = _pair_slices(offset, segmentation.shape[2:])
            if pair is None:
                continue
            p, q = pair
            distance = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing, strict=True)))
            contrast = (images[p] - images[q]).square().sum(dim=1, keepdim=True)
            weight = torch.exp(contrast / (-2 * sigma_rgb**2)) * (mask[p] * mask[q] / distance)
            s_p, s_q = segmentation[p], segmentation[q]  # (B, K, *pairs)
            both = (s_p * s_q).sum(dim=1, keepdim=True)
            # each unordered pair stands for (p, q) and (q, p): the factors 2 below
            cut = cut + spatial_sum(weight * (s_p.sum(1, True) + s_q.sum(1, True) - 2 * both))[:, 0]
            association = association + 2 * spatial_sum(weight * both)[:, 0]
            total = total + 2 * spatial_sum(weight)[:, 0]
        if normalization == "rloss":
            values = -association
        elif normalization == "none":
            values = cut
        else:
            values = cut / total.clamp_min(torch.finfo(total.dtype).tiny)
        return values.mean()


class GridPottsLoss(WeightedLoss):
    """``weight * grid_potts_loss(images, probs, valid_mask, ...)``.

    Example:
        >>> criterion = GridPottsLoss(weight=1.0, connectivity=8)
        >>> criterion(torch.rand(1, 1, 8, 8) * 255, torch.full((1, 2, 8, 8), 0.5))
        tensor(0.5000)
    """

    function = staticmethod(grid_potts_loss)
    checks = own_checks(connectivity=_check_connectivity, normalization=choice(NORMALIZATIONS))
