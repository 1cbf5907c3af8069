"""The pairwise operator of the fully connected CRF, shared by inference, CRF-as-RNN and proposals.

One Gaussian kernel per call to :class:`GaussianMessages`; its filter (a permutohedral lattice
or the exact O(N^2) sum) is built once and reused for every mean-field iteration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from weakseg._validation import (
    check_finite,
    check_floating,
    check_ndim,
    check_not_empty,
    check_positive,
    check_same_batch_and_spatial,
    check_same_device,
    check_tensor,
)
from weakseg.filtering import (
    PermutohedralLattice,
    dense_gaussian_filter,
    intensity_position_features,
    position_features,
)

BACKENDS: tuple[str, ...] = ("lattice", "exact")
NORMALIZATIONS: tuple[str, ...] = ("symmetric", "none")


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


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return str(value)


def check_nonnegative(name: str, value: float) -> float:
    """Raise unless ``value`` is a finite number >= 0; return it as float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (number >= 0 and number < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_n_iter(n_iter: int) -> int:
    """``n_iter`` must be an int >= 0 (bools rejected)."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int):
        raise TypeError(f"n_iter must be an int, got {type(n_iter).__name__}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    return n_iter


def check_logits_and_images(logits: Tensor, images: Tensor) -> None:
    """``logits [B, K, *spatial]`` and ``images [B, C, *spatial]``, 2D or 3D, finite floats."""
    check_tensor("logits", logits)
    check_tensor("images", images)
    check_ndim("logits", logits, (4, 5), "[B, K, H, W] or [B, K, D, H, W]")
    check_ndim("images", images, (4, 5), "[B, C, H, W] or [B, C, D, H, W]")
    check_not_empty("logits", logits)
    check_not_empty("images", images)
    check_floating("logits", logits)
    check_floating("images", images)
    if logits.ndim != images.ndim:
        raise ValueError(
            f"logits and images must have the same number of dims, got logits of shape "
            f"{tuple(logits.shape)} and images of shape {tuple(images.shape)}"
        )
    check_same_batch_and_spatial("logits", logits, "images", images)
    check_same_device("logits", logits, "images", images)
    check_finite("logits", logits)
    check_finite("images", images)


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


def check_labels(labels: Tensor, logits: Tensor, ignore_index: int, name: str = "labels") -> None:
    """``labels [B, *spatial]`` integer class ids in ``0..K-1`` or ``ignore_index``."""
    check_tensor(name, labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class ids, got dtype {labels.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"{name} must have shape [B, *spatial] = {expected} to match logits of shape "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    check_same_device(name, labels, "logits", logits)
    num_classes = logits.shape[1]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad])[:5].tolist()
        raise ValueError(
            f"{name} must hold class ids in 0..{num_classes - 1} or ignore_index={ignore_index}, "
            f"found {values}"
        )


def check_valid_mask(valid_mask: Tensor, logits: Tensor) -> None:
    """``valid_mask [B, *spatial]`` bool, on the device of ``logits``."""
    check_tensor("valid_mask", valid_mask)
    if valid_mask.dtype != torch.bool:
        raise TypeError(f"valid_mask must be a bool tensor, got dtype {valid_mask.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(valid_mask.shape) != expected:
        raise ValueError(
            f"valid_mask must have shape [B, *spatial] = {expected} to match logits of shape "
            f"{tuple(logits.shape)}, got {tuple(valid_mask.shape)}"
        )
    check_same_device("valid_mask", valid_mask, "logits", logits)


def build_kernels(
    images: Tensor,
    *,
    w_bilateral: float,
    theta_alpha: float,
    theta_beta: float,
    w_gaussian: float,
    theta_gamma: float,
    normalization: str,
    spacing: Sequence[float] | None,
    backend: str,
    mask: Tensor | None = None,
    symmetric: bool = True,
) -> list[tuple[float, GaussianMessages]]:
    """The appearance (bilateral) and smoothness kernels with non-zero weight, built once."""
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


def check_kernel_parameters(
    w_bilateral: float,
    theta_alpha: float,
    theta_beta: float,
    w_gaussian: float,
    theta_gamma: float,
    normalization: str,
    backend: str,
) -> tuple[float, float, float, float, float]:
    """Validate the kernel hyper-parameters; return the numbers as floats."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("backend", backend, BACKENDS)
    return (
        check_nonnegative("w_bilateral", w_bilateral),
        check_positive("theta_alpha", theta_alpha),
        check_positive("theta_beta", theta_beta),
        check_nonnegative("w_gaussian", w_gaussian),
        check_positive("theta_gamma", theta_gamma),
    )
