r"""A prebuilt dense Gaussian affinity, for callers that evaluate a loss on the same images many
times (interactive segmentation optimizes a free logit field for hundreds of steps on one image).

:class:`GaussianAffinity` is the operator :math:`v \mapsto W v` of
:func:`~weakseg.losses.dense_crf_loss` (and of the normalized and kernel cuts), with
:math:`W_{pq} = \exp(-|x_p - x_q|^2 / 2\sigma_{xy}^2 - |I_p - I_q|^2 / 2\sigma_{rgb}^2)`, self
term included: its lattice (or exact filter) is built once, and every loss call given
``affinity=`` reuses it instead of building its own.

Example:
    >>> from weakseg.losses import dense_crf_loss
    >>> images = torch.rand(1, 3, 32, 32) * 255
    >>> affinity = GaussianAffinity(images, sigma_rgb=15.0, sigma_xy=10.0)
    >>> for _ in range(3):  # one lattice for every step
    ...     loss = dense_crf_loss(images, torch.rand(1, 2, 32, 32).softmax(1), affinity=affinity)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import check_choice, check_positive, check_tensor
from weakseg.losses._affinity import (
    BACKENDS,
    Affinity,
    check_images,
    gaussian_affinity,
    prepare_inputs,
)

__all__ = ["GaussianAffinity", "check_affinity", "check_dense_arguments", "dense_inputs"]


class GaussianAffinity:
    """The dense intensity-position Gaussian of one image batch, built once.

    Args:
        images: Tensor[B, C, *spatial], 0-255 intensities (as the losses take them).
        sigma_rgb: intensity bandwidth, 0-255 units.
        sigma_xy: spatial bandwidth in pixels (or the units of ``spacing``), at full resolution.
        scale_factor: the loss's ``scale_factor``: the images are resized (nearest) by it and
            ``sigma_xy`` multiplied by it, as the losses do.
        spacing: physical pixel/voxel size along each spatial axis.
        backend: ``"lattice"`` (permutohedral lattice, O(N)) or ``"exact"`` (O(N^2) reference).
        dtype: the compute dtype of the losses it serves (float32, or float64 for float64 probs).

    Attributes:
        batch_size, spatial_shape: the size of the maps it filters (after ``scale_factor``).
        operator: the filter it applies, a :class:`~weakseg.filtering.PermutohedralLattice`
            (``backend="lattice"``) or the exact O(N^2) filter.
    """

    def __init__(
        self,
        images: Tensor,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 80.0,
        *,
        scale_factor: float = 1.0,
        spacing: Sequence[float] | None = None,
        backend: str = "lattice",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_images(images)
        check_choice("backend", backend, BACKENDS)
        self.sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
        self.sigma_xy = check_positive("sigma_xy", sigma_xy)
        self.scale_factor = check_positive("scale_factor", scale_factor)
        self.backend = backend
        self.dtype = dtype
        images = images.detach().to(dtype)
        if self.scale_factor != 1:
            images = F.interpolate(images, scale_factor=self.scale_factor, mode="nearest")
        self.batch_size, self.spatial_shape = images.shape[0], tuple(images.shape[2:])
        sigma = self.sigma_xy * self.scale_factor
        self.operator = gaussian_affinity(images, self.sigma_rgb, sigma, spacing, backend)

    def __call__(self, values: Tensor) -> Tensor:
        """``W v`` for ``values [B, C, *spatial]`` (linear, symmetric; differentiable)."""
        return self.operator(values)

    def __repr__(self) -> str:
        return (
            f"GaussianAffinity(batch_size={self.batch_size}, spatial_shape={self.spatial_shape}, "
            f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
            f"scale_factor={self.scale_factor}, backend={self.backend!r})"
        )


def check_affinity(affinity: object, segmentation: Tensor, scale_factor: float) -> None:
    """A prebuilt ``affinity`` must be a :class:`GaussianAffinity` of the loss's batch size,
    spatial size (after resizing), ``scale_factor`` and compute dtype."""
    if not isinstance(affinity, GaussianAffinity):
        raise TypeError(f"affinity must be a GaussianAffinity, got {type(affinity).__name__}")
    if affinity.dtype != segmentation.dtype:
        raise ValueError(
            f"affinity was built for {affinity.dtype} but the loss computes in "
            f"{segmentation.dtype} (float64 probs compute in float64); pass "
            f"dtype={segmentation.dtype} to GaussianAffinity"
        )
    if affinity.scale_factor != float(scale_factor):
        raise ValueError(
            f"affinity was built with scale_factor={affinity.scale_factor}, the loss has "
            f"scale_factor={float(scale_factor)}; pass the same value to both"
        )
    expected = (segmentation.shape[0], tuple(segmentation.shape[2:]))
    if (affinity.batch_size, affinity.spatial_shape) != expected:
        raise ValueError(
            f"affinity was built for batch size {affinity.batch_size} and spatial size "
            f"{affinity.spatial_shape}, but the loss filters {expected[0]} maps of size "
            f"{expected[1]}; build it from the same images"
        )


def check_dense_arguments(
    images: object, probs: object, backend: str, sigma_rgb: float, sigma_xy: float
) -> tuple[float, float]:
    """The checks every dense loss runs first: tensors, ``backend``; the checked bandwidths."""
    check_tensor("images", images)
    check_tensor("probs", probs)
    check_choice("backend", backend, BACKENDS)
    return check_positive("sigma_rgb", sigma_rgb), check_positive("sigma_xy", sigma_xy)


def dense_inputs(
    images: Tensor,
    probs: Tensor,
    valid_mask: Tensor | None,
    affinity: GaussianAffinity | None,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: float,
    spacing: Sequence[float] | None,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Affinity]:
    """``(images, segmentation, mask, affinity)`` of a dense loss: the inputs checked and
    resized by ``scale_factor`` (see ``prepare_inputs``), and the Gaussian of the images with
    ``sigma_xy * scale_factor``, or the prebuilt ``affinity`` checked against them. Call it
    with autocast disabled."""
    images, segmentation, mask = prepare_inputs(images, probs, valid_mask, scale_factor)
    if affinity is None:
        sigma = sigma_xy * float(scale_factor)
        built = gaussian_affinity(images, sigma_rgb, sigma, spacing, backend)
        return images, segmentation, mask, built
    check_affinity(affinity, segmentation, scale_factor)
    return images, segmentation, mask, affinity
