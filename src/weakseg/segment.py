r"""Interactive (shallow) segmentation of one image from its scribbles.

Minimizes, over a free logit field :math:`L` (one K-vector per pixel) with Adam,

.. math::
    \frac{1}{|\Omega_L|}\sum_{p \in \Omega_L} H(Y_p, S_p) + \lambda\, R(S),
    \qquad S = \mathrm{softmax}(L),

where R is the relaxed dense CRF (eq. (4), normalized by :math:`\mathbf 1^\top W \mathbf 1`),
normalized cut (eq. (5)) or kernel cut (eq. (6)) with the dense Gaussian affinity over
:math:`[x/\sigma_{xy}, y/\sigma_{xy}, I/\sigma_{rgb}]`. The result is the argmax of S with the
scribbled pixels kept. The same code serves as an annotation tool and as a proposal generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import (
    check_finite,
    check_floating,
    check_ndim,
    check_not_empty,
    check_positive,
    check_tensor,
)
from weakseg.crf._kernels import check_choice, check_nonnegative
from weakseg.crf._regularizers import gaussian_cut_terms, gaussian_filter_for
from weakseg.filtering import intensity_position_features

__all__ = ["SEGMENT_LOSSES", "segment_image"]

SEGMENT_LOSSES: tuple[str, ...] = ("kernel_cut", "dense_crf", "normalized_cut")

# Below this many pixels the exact O(N^2) filter is both exact and fast enough.
_EXACT_MAX_PIXELS = 2048


def segment_image(
    image: Tensor,
    scribbles: Tensor,
    *,
    loss: str = "kernel_cut",
    weight: float = 1.0,
    gamma: float = 0.1,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    num_classes: int | None = None,
    n_steps: int = 60,
    lr: float = 0.25,
    scale_factor: float | None = None,
    ignore_index: int = 255,
    backend: str = "auto",
    return_probs: bool = False,
) -> Tensor:
    r"""Segment one image from scribbles by minimizing pCE + ``weight`` * regularized loss.

    Args:
        image: Tensor[C, H, W], float intensities (0-255; C = 1 gray, 3 RGB, or any).
        scribbles: Tensor[H, W], int class ids ``0..K-1``, ``ignore_index`` = unlabeled.
        loss: ``"kernel_cut"`` (dense CRF + ``gamma`` x normalized cut), ``"dense_crf"`` or
            ``"normalized_cut"``.
        weight: :math:`\lambda` (>= 0); 0 keeps only the scribbles (pCE alone).
        gamma: normalized-cut weight inside the kernel cut loss.
        sigma_rgb, sigma_xy: bandwidths of the Gaussian affinity (intensity units, pixels of
            the input image).
        num_classes: K; by default the largest scribbled id + 1.
        n_steps, lr: Adam iterations and learning rate on the logit field.
        scale_factor: optimize at this resolution (then upsample the logits bilinearly); by
            default 1 up to 64k pixels and ``sqrt(64k / N)`` beyond, for speed.
        ignore_index: the "unlabeled" id in ``scribbles``.
        backend: ``"lattice"``, ``"exact"`` or ``"auto"`` (exact up to 2048 pixels).
        return_probs: return S, Tensor[K, H, W], instead of the labels.

    Returns:
        Tensor[H, W] (int64) labels, scribbled pixels keeping their label; or the
        probabilities if ``return_probs``. On the device of ``image``.

    Example:
        >>> image = torch.zeros(1, 20, 20); image[:, :, 10:] = 200
        >>> scribbles = torch.full((20, 20), 255); scribbles[5, 2] = 0; scribbles[5, 17] = 1
        >>> labels = segment_image(image, scribbles, loss="dense_crf", sigma_xy=10)
        >>> labels[:, :10].eq(0).float().mean() > 0.9, labels[:, 10:].eq(1).float().mean() > 0.9
        (tensor(True), tensor(True))
    """
    check_tensor("image", image)
    check_ndim("image", image, (3,), "[C, H, W]")
    check_not_empty("image", image)
    check_floating("image", image)
    check_finite("image", image)
    check_tensor("scribbles", scribbles)
    if scribbles.is_floating_point() or scribbles.is_complex() or scribbles.dtype == torch.bool:
        raise TypeError(f"scribbles must be an integer tensor of class ids, got {scribbles.dtype}")
    if tuple(scribbles.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"scribbles must have shape [H, W] = {tuple(image.shape[1:])} to match image of "
            f"shape {tuple(image.shape)}, got {tuple(scribbles.shape)}"
        )
    if scribbles.device != image.device:
        raise ValueError(f"scribbles is on {scribbles.device} but image is on {image.device}")
    check_choice("loss", loss, SEGMENT_LOSSES)
    check_choice("backend", backend, ("auto", "lattice", "exact"))
    weight = check_nonnegative("weight", weight)
    gamma = check_nonnegative("gamma", gamma)
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    lr = check_positive("lr", lr)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    labeled = scribbles != ignore_index
    if not bool(labeled.any()):
        raise ValueError("scribbles has no labeled pixel (every value is ignore_index)")
    largest = int(scribbles[labeled].max())
    if int(scribbles[labeled].min()) < 0:
        raise ValueError(f"scribbles must hold ids >= 0, found {int(scribbles[labeled].min())}")
    if num_classes is None:
        num_classes = max(largest + 1, 2)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    elif largest >= num_classes:
        raise ValueError(f"scribbles holds class id {largest} but num_classes is {num_classes}")

    height, width = image.shape[1:]
    n_pixels = height * width
    if scale_factor is None:
        scale_factor = min(1.0, (65536 / n_pixels) ** 0.5)
    scale_factor = check_positive("scale_factor", scale_factor)
    dtype = image.dtype
    size = (max(1, round(height * scale_factor)), max(1, round(width * scale_factor)))
    small_image = image.unsqueeze(0)
    small_scribbles = scribbles.unsqueeze(0)
    if size != (height, width):
        small_image = F.interpolate(small_image, size=size, mode="bilinear", align_corners=False)
        # Max-pool one-hot scribbles: nearest sampling would drop 1-pixel-wide strokes.
        ids = torch.where(labeled, scribbles, torch.zeros_like(scribbles)).long()
        onehot = F.one_hot(ids, num_classes).movedim(-1, 0)[None] * labeled  # (1, K, H, W)
        pooled = F.adaptive_max_pool2d(onehot.to(dtype), size)  # (1, K, h, w)
        unlabeled = torch.full_like(pooled[:, 0], ignore_index).long()
        small_scribbles = torch.where(pooled.amax(dim=1) > 0, pooled.argmax(dim=1), unlabeled)
    # Bandwidths are in input pixels; the features are built on the resized grid.
    effective = sigma_xy * size[1] / width
    features = intensity_position_features(small_image, sigma_rgb, effective)  # (1, D, h, w)
    if backend == "auto":
        backend = "exact" if size[0] * size[1] <= _EXACT_MAX_PIXELS else "lattice"
    gaussian_filter = gaussian_filter_for(features, backend)  # built once for all steps

    small_labeled = small_scribbles != ignore_index  # (1, h, w)
    targets = torch.where(small_labeled, small_scribbles, torch.zeros_like(small_scribbles))
    logits = torch.zeros((1, num_classes, *size), device=image.device, dtype=dtype)
    logits.requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    count = small_labeled.sum().clamp_min(1)
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        ce = F.cross_entropy(logits, targets, reduction="none")  # (1, h, w)
        objective = (ce * small_labeled).sum() / count
        if weight > 0:
            probs = torch.softmax(logits, dim=1)
            crf, nc = gaussian_cut_terms(probs, gaussian_filter)
            if loss == "dense_crf":
                reg = crf
            elif loss == "normalized_cut":
                reg = nc
            else:
                reg = crf + gamma * nc
            objective = objective + weight * reg.sum()
        objective.backward()
        optimizer.step()

    with torch.no_grad():
        full = logits.detach()
        if size != (height, width):
            full = F.interpolate(full, size=(height, width), mode="bilinear", align_corners=False)
        probs = torch.softmax(full, dim=1)[0]  # (K, H, W)
        if return_probs:
            return probs
        labels = probs.argmax(dim=0)
        return torch.where(labeled, scribbles.long(), labels)
