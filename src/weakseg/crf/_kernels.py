"""The pairwise operator of the fully connected CRF, shared by inference, CRF-as-RNN and proposals.

One Gaussian kernel per call to :class:`GaussianMessages`; its filter (a permutohedral lattice
or the exact O(N^2) sum) is built once and reused for every mean-field iteration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from weakseg._validation import check_finite, check_floating, check_tensor
from weakseg.crf.kernel_params import KernelParams
from weakseg.filtering import (
    PermutohedralLattice,
    dense_gaussian_filter,
    intensity_position_features,
    position_features,
)


class GaussianMessages:
    r"""Mean-field messages of one Gaussian kernel, self term excluded.

    For ``normalization="none"`` the operator is :math:`(K - I)\,v`; for ``"symmetric"`` it is
    :math:`(D^{-1/2} K D^{-1/2} - \mathrm{diag}(1/d))\,v` with :math:`d = K\mathbf{1}` (self term
    included in the degree, as in pydensecrf). Both are the normalized kernel with its diagonal
    removed, so a pixel never sends a message to itself. ``mask`` (``[B, 1, *spatial]``, 0/1)
    removes pixels (padding) from the graph: they neither send nor receive messages.

    Written as :math:`S K S v - \mathrm{diag}(s^2)\, v` with :math:`S = \mathrm{diag}(s)`,
    :math:`s = d^{-1/2}` times the mask (``scale``, ``None`` for all ones) and the self weight
    :math:`s^2` (``self_weight``), so that callers summing several kernels can fuse the scalings
    and the self terms (see :func:`weakseg.crf.mean_field.run_mean_field`).

    Args:
        features: Tensor[B, D, *spatial], already divided by the bandwidths.
        normalization: ``"symmetric"`` or ``"none"``.
        backend: ``"lattice"`` (O(N D)) or ``"exact"`` (O(N^2), the reference).
        mask: optional Tensor[B, 1, *spatial] of 0/1 in the dtype of ``features``.
        symmetric: the lattice's blur (see :class:`PermutohedralLattice`); ``False`` halves the
            blur passes where no symmetry is needed (plain mean-field updates).
    """

    def __init__(
        self,
        features: Tensor,
        normalization: str,
        backend: str,
        mask: Tensor | None = None,
        symmetric: bool = True,
    ) -> None:
        features = features.detach()
        self.filter: Callable[[Tensor], Tensor]  # K v, self term included
        if backend == "lattice":
            self.filter = PermutohedralLattice(features, symmetric=symmetric)
        else:
            self.filter = lambda values: dense_gaussian_filter(values, features)
        self.scale: Tensor | None = mask  # s: (B, 1, *spatial) or None for all ones
        self.self_weight: Tensor | float = 1.0 if mask is None else mask  # s^2
        if normalization == "symmetric":
            ones = features.new_ones((features.shape[0], 1, *features.shape[2:]))
            if mask is not None:
                ones = ones * mask
            with torch.no_grad():
                degree = self.filter(ones)  # (B, 1, *spatial), >= 1 where mask is 1
            # The lattice degree is approximate; keep it away from 0 so rsqrt stays finite.
            self.scale = degree.clamp_min(1e-6).rsqrt_()
            if mask is not None:
                self.scale.mul_(mask)
            self.self_weight = self.scale.square()

    def __call__(self, values: Tensor) -> Tensor:
        """``values [B, C, *spatial] -> messages [B, C, *spatial]`` (linear in ``values``)."""
        if self.scale is None:
            return self.filter(values) - self.self_weight * values
        return self.filter(values * self.scale) * self.scale - self.self_weight * values


def check_compat(compat: Tensor | None, num_classes: int, like: Tensor) -> Tensor | None:
    """Return the K x K label compatibility (cost) matrix on the device and in the dtype of
    ``like``; ``None`` (Potts ``1 - I``, which inference never materializes) stays ``None``."""
    if compat is None:
        return None
    check_tensor("compat", compat)
    if compat.shape != (num_classes, num_classes):
        raise ValueError(
            f"compat must have shape [K, K] = ({num_classes}, {num_classes}) for K = "
            f"{num_classes} classes, got {tuple(compat.shape)}"
        )
    check_floating("compat", compat)
    check_finite("compat", compat)
    return compat.to(device=like.device, dtype=like.dtype)


def build_kernels(
    images: Tensor,
    params: KernelParams,
    *,
    normalization: str,
    spacing: Sequence[float] | None,
    backend: str,
    mask: Tensor | None = None,
    symmetric: bool = True,
) -> list[tuple[float, GaussianMessages]]:
    """The appearance (bilateral) and smoothness kernels of ``params`` with non-zero weight,
    built once."""
    w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma = params
    kernels: list[tuple[float, GaussianMessages]] = []
    if w_bilateral > 0:
        feats = intensity_position_features(images, theta_beta, theta_alpha, spacing=spacing)
        bilateral = GaussianMessages(feats, normalization, backend, mask, symmetric)
        kernels.append((w_bilateral, bilateral))
    if w_gaussian > 0:
        grid = (images.shape[0], tuple(images.shape[2:]), theta_gamma)
        grid += (None if spacing is None else tuple(float(s) for s in spacing),)
        settings = (normalization, backend, images.device, images.dtype)
        if mask is None:
            smoothness = _smoothness_messages(*grid, *settings, None, symmetric)
        else:
            smoothness = _build_smoothness_messages(*grid, *settings, mask, symmetric)
        kernels.append((w_gaussian, smoothness))
    return kernels


def _build_smoothness_messages(
    batch_size: int,
    spatial_shape: tuple[int, ...],
    theta_gamma: float,
    spacing: tuple[float, ...] | None,
    normalization: str,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    mask: Tensor | None = None,
    symmetric: bool = True,
) -> GaussianMessages:
    """The smoothness kernel: a Gaussian over pixel positions only, whatever the image."""
    feats = position_features(
        batch_size, spatial_shape, theta_gamma, spacing=spacing, device=device, dtype=dtype
    )
    return GaussianMessages(feats, normalization, backend, mask, symmetric)


# The smoothness kernel depends on the image size only, so the last few are kept: inference on
# images of one size (evaluation, proposals on fixed crops) builds its lattice and degrees once.
# GaussianMessages is never modified after construction, so sharing it is safe.
_smoothness_messages = functools.lru_cache(maxsize=4)(_build_smoothness_messages)
