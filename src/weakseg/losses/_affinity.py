"""What the regularized losses share: input checks, resizing, the Gaussian affinity operator and
the quadratic forms of eqs. (4), (5), (11) and (12).

Notation (paper, section 2): ``S`` is the segmentation ``[B, K, *spatial]`` with the excluded pixels
zeroed, ``m`` the valid-pixel indicator ``[B, 1, *spatial]`` (the ``1`` of the paper restricted to
valid pixels), ``W S`` the filtered segmentation and ``d = W m`` the degrees. Because the invalid
pixels are zero in both ``S`` and ``m``, every quadratic form below only sees the rows and columns
of ``W`` that belong to valid pixels: the losses are those of the subgraph of valid pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import (
    check_finite,
    check_ndim,
    check_not_empty,
    check_positive,
    check_same_batch_and_spatial,
    check_same_device,
    check_tensor,
    check_valid_mask,
)
from weakseg.filtering import (
    PermutohedralLattice,
    dense_gaussian_filter,
    intensity_position_features,
)

Normalization = Literal["affinity", "none", "rloss"]
Backend = Literal["lattice", "exact"]
NORMALIZATIONS: tuple[str, ...] = ("affinity", "none", "rloss")
# The original rloss filter (its C++ permutohedral lattice) returns about 0.56 of the exact
# Gaussian sum that ours matches: measured original loss / ours = 0.545-0.585 (dense CRF loss,
# K = 21, RGBXY 15 / 100, four photos at 321² and 512², B 1 and 4; benchmarks/versus_original.py,
# "loss ratio"). ``"rloss_original"`` multiplies the ``"rloss"`` value and gradient by it, so
# that the original's published weights (2e-9) regularize as hard as they did there.
RLOSS_ORIGINAL_SCALE = 0.565
BACKENDS: tuple[str, ...] = ("lattice", "exact")

# Images are intensities in 0-255; half a grey level of slack absorbs rounding and resampling.
IMAGE_RANGE_TOLERANCE = 0.5
# |sum_k S_pk - 1| and -S_pk allowed. A bfloat16 softmax (even upcast later) is off by up to
# 2 * 2^-9 ~ 4e-3; logits passed by mistake are off by far more than 1e-2.
PROBABILITY_TOLERANCE = 1e-2

Affinity = Callable[[Tensor], Tensor]


def _check_image_layout(images: Tensor) -> None:
    check_tensor("images", images)
    check_ndim("images", images, (4, 5), "[B, C, H, W] or [B, C, D, H, W]")
    check_not_empty("images", images)
    if images.dtype == torch.bool or images.is_complex():
        raise TypeError(f"images must be a real-valued tensor, got dtype {images.dtype}")


def _check_probs_layout(probs: Tensor) -> None:
    check_tensor("probs", probs)
    check_ndim("probs", probs, (4, 5), "[B, K, H, W] or [B, K, D, H, W]")
    check_not_empty("probs", probs)
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating-point tensor, got dtype {probs.dtype}")


def _image_statistics(images: Tensor) -> Tensor:
    """``[min, max]`` of the images as float64 on their device (no host transfer), in one
    pass: NaN propagates into both and an infinity into one, so they are finite if and only if
    every value is."""
    low, high = torch.aminmax(images.detach())
    return torch.stack([low.double(), high.double()])


def _probs_summary(probs: Tensor, valid_mask: Tensor | None) -> Tensor:
    """``[smallest entry, worst |sum - 1| over the valid pixels]`` as float64 on the device of
    ``probs`` (no host transfer): two passes over ``probs`` instead of the two reductions over
    K and the per-pixel passes of :func:`_probs_statistics`. NaN propagates into both; both
    within :data:`PROBABILITY_TOLERANCE` means that every valid pixel passes the checks (the
    smallest entry is taken over all pixels, so a failure may still be an excluded pixel's:
    :func:`_probs_statistics` tells)."""
    values = probs.detach()
    error = values.sum(dim=1).sub_(1).abs_()  # (B, *spatial)
    if valid_mask is not None:
        error = torch.where(valid_mask, error, 0)
    return torch.stack([values.amin().double(), error.amax().double()])


def _probs_pass(smallest: float, worst: float) -> bool:
    """Whether :func:`_probs_summary` clears every valid pixel (NaN fails both comparisons)."""
    return smallest >= -PROBABILITY_TOLERANCE and worst <= PROBABILITY_TOLERANCE


def _probs_statistics(probs: Tensor, valid_mask: Tensor | None) -> Tensor:
    """``[non-finite, negative, off-simplex, worst |sum - 1|]`` counts and error over the valid
    pixels, as float64 on the device of ``probs`` (no host transfer)."""
    values = probs.detach()
    tol = PROBABILITY_TOLERANCE
    # Two reductions over K instead of one pass per condition: NaN and inf propagate into both
    # the sum and the minimum, so their finiteness stands for that of every entry.
    total = values.sum(dim=1)  # (B, *spatial)
    smallest = values.amin(dim=1)  # (B, *spatial)
    valid = torch.isfinite(total) & torch.isfinite(smallest)
    if valid_mask is not None:
        bad = (valid_mask & ~valid).sum()
        valid = valid & valid_mask
    else:
        bad = (~valid).sum()
    negative = (valid & (smallest < -tol)).sum()
    error = torch.where(valid, (total - 1).abs(), 0)  # (B, *spatial)
    off = (error > tol).sum()
    return torch.stack([bad.double(), negative.double(), off.double(), error.max().double()])


def _raise_for_images(images: Tensor, low: float, high: float, finite: bool) -> None:
    if not finite:
        check_finite("images", images)
    if low < -IMAGE_RANGE_TOLERANCE or high > 255 + IMAGE_RANGE_TOLERANCE:
        raise ValueError(
            f"images must hold intensities in the 0-255 range (sigma_rgb is measured in those "
            f"units), got values in [{low:.4g}, {high:.4g}]; pass the raw image, not the "
            "network-normalized one, and rescale other ranges (e.g. CT in HU) to 0-255"
        )
    if images.is_floating_point() and 0 < high <= 1:
        warnings.warn(
            f"images lie in [0, {high:.3g}] but the losses expect 0-255 intensities: with "
            "sigma_rgb in 0-255 units the colour term barely matters; multiply the images by 255",
            UserWarning,
            stacklevel=4,
        )


def _raise_for_probs(probs: Tensor, bad: int, negative: int, off: int, worst: float) -> None:
    if bad:
        raise ValueError(f"probs contains non-finite values (NaN or inf) at {bad} valid pixels")
    if negative:
        raise ValueError(
            f"probs must be probabilities (softmax output), but {negative} valid pixels have "
            f"negative entries (min {float(probs.detach().min()):.4g})"
        )
    if worst > PROBABILITY_TOLERANCE:
        raise ValueError(
            f"probs must sum to 1 over the K={probs.shape[1]} classes (dim 1) at every valid "
            f"pixel, but {off} pixels are off by up to {worst:.4g} "
            f"(tolerance {PROBABILITY_TOLERANCE:g}); pass softmax(logits, dim=1), not logits"
        )


def check_images(images: Tensor) -> None:
    """``images [B, C, *spatial]``: real-valued intensities in 0-255.

    Raises ValueError outside ``[-0.5, 255.5]`` (network-normalized or HU-valued inputs would
    silently make ``sigma_rgb`` meaningless) and warns when a float image lies within [0, 1],
    the other usual mistake (the colour term then vanishes at the default ``sigma_rgb``).
    One host synchronization (the statistics come back in one transfer).
    """
    _check_image_layout(images)
    low, high = _image_statistics(images).tolist()
    _raise_for_images(images, low, high, math.isfinite(low) and math.isfinite(high))


def check_probs(probs: Tensor, valid_mask: Tensor | None) -> None:
    """``probs [B, K, *spatial]``: finite, >= 0 and summing to 1 over K at every valid pixel.

    Invalid pixels are not checked: they never enter a loss. One host synchronization.
    """
    _check_probs_layout(probs)
    if not _probs_pass(*_probs_summary(probs, valid_mask).tolist()):
        bad, negative, off, worst = _probs_statistics(probs, valid_mask).tolist()
        _raise_for_probs(probs, int(bad), int(negative), int(off), worst)


# What the device-side check says when it fails (at most 255 characters: CUDA's limit).
DEVICE_CHECK_MESSAGE = (
    "weakseg loss inputs: images must be finite 0-255 intensities and probs finite softmax "
    "probabilities (>= -0.01, summing to 1 within 0.01) at every valid pixel; the same call on "
    "the CPU names the failing values"
)


def check_images_and_probs(
    images: Tensor, probs: Tensor, valid_mask: Tensor | None, *, on_device: bool | None = None
) -> None:
    """:func:`check_images` and :func:`check_probs` of a loss call, shapes and values.

    On the CPU the value checks reduce to four numbers read back at once (the images' range,
    the smallest probability and the worst sum), and where they fail, to the counts that the
    ValueError (or the [0, 1] warning) names. Elsewhere reading them
    back would stop the host until the device catches up, once per loss call: the checks
    reduce to one flag that the device asserts (:func:`assert_images_and_probs`, no
    synchronization). A failure there is a device-side assertion with
    :data:`DEVICE_CHECK_MESSAGE`: CUDA reports it at the next synchronization and the process
    cannot use the GPU afterwards, as for an out-of-range index; the [0, 1] warning is not
    issued there. ``on_device`` overrides the choice (``None``: by the device).
    """
    _check_image_layout(images)
    _check_probs_layout(probs)
    check_valid_mask(valid_mask, probs)
    check_same_batch_and_spatial("probs", probs, "images", images)
    check_same_device("probs", probs, "images", images)
    if on_device is None:
        on_device = probs.device.type != "cpu"
    if on_device:
        assert_images_and_probs(images, probs, valid_mask)
        return
    stats = torch.cat([_image_statistics(images), _probs_summary(probs, valid_mask)])
    low, high, smallest, worst = stats.tolist()
    _raise_for_images(images, low, high, math.isfinite(low) and math.isfinite(high))
    if not _probs_pass(smallest, worst):
        bad, negative, off, worst = _probs_statistics(probs, valid_mask).tolist()
        _raise_for_probs(probs, int(bad), int(negative), int(off), worst)


def assert_images_and_probs(images: Tensor, probs: Tensor, valid_mask: Tensor | None) -> None:
    """The value checks of :func:`check_images_and_probs` as one device-side assertion (no
    host synchronization; on the CPU it raises RuntimeError with
    :data:`DEVICE_CHECK_MESSAGE`). Shapes, dtypes and devices must be checked already."""
    tol = PROBABILITY_TOLERANCE
    values = probs.detach()
    # A pixel fails when max(|sum - 1|, -min) > tol; NaN and inf propagate into it (and NaN
    # fails every comparison), so it checks finiteness too.
    worst = torch.maximum((values.sum(dim=1) - 1).abs(), values.amin(dim=1).neg())
    if valid_mask is not None:
        worst = torch.where(valid_mask, worst, 0)
    ok = worst.amax() <= tol
    if images.dtype != torch.uint8:  # uint8 images are always in range
        low, high = torch.aminmax(images.detach())
        ok = ok & (low >= -IMAGE_RANGE_TOLERANCE) & (high <= 255 + IMAGE_RANGE_TOLERANCE)
    torch._assert_async(ok, DEVICE_CHECK_MESSAGE)


def prepare_inputs(
    images: Tensor, probs: Tensor, valid_mask: Tensor | None, scale_factor: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Check and resize the inputs of a regularizer; return ``(images, S, m)`` in float32/64.

    ``S = where(valid, probs, 0)`` keeps the graph to ``probs``; ``m`` is the float indicator
    ``[B, 1, *spatial]`` of valid pixels. The compute dtype is float64 for float64 ``probs`` and
    float32 otherwise (half-precision AMP outputs are upcast). With ``scale_factor != 1`` the
    image and the mask are resized nearest and the probabilities (bi/tri)linearly, as in the
    original rloss code.
    """
    scale_factor = check_positive("scale_factor", scale_factor)
    check_images_and_probs(images, probs, valid_mask)

    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    images = images.detach().to(dtype)
    probs = probs.to(dtype)
    if scale_factor != 1:
        sizes = [int(s * scale_factor) for s in probs.shape[2:]]
        if min(sizes) < 1:
            raise ValueError(
                f"scale_factor={scale_factor} shrinks the spatial size {tuple(probs.shape[2:])} "
                f"to {tuple(sizes)}; every side must stay >= 1"
            )
        linear = "bilinear" if probs.ndim == 4 else "trilinear"
        images = F.interpolate(images, scale_factor=scale_factor, mode="nearest")
        probs = F.interpolate(probs, scale_factor=scale_factor, mode=linear, align_corners=False)
        if valid_mask is not None:
            mask = valid_mask[:, None].to(dtype)
            valid_mask = F.interpolate(mask, scale_factor=scale_factor, mode="nearest")[:, 0] > 0.5
    if valid_mask is None:
        return images, probs, probs.new_ones((probs.shape[0], 1, *probs.shape[2:]))
    mask = valid_mask[:, None]  # (B, 1, *spatial)
    # where, not a product: NaN in excluded padding must not leak into the loss.
    return images, torch.where(mask, probs, 0), mask.to(dtype)


def gaussian_affinity(
    images: Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    spacing: Sequence[float] | None,
    backend: str,
) -> Affinity:
    """The operator ``v -> W v`` of the dense intensity-position Gaussian (self term included).

    Built once per loss call; the lattice is reused by every product of the forward pass and
    the backward needs none. Features are built from detached images: no gradient reaches them.
    """
    features = intensity_position_features(images, sigma_rgb, sigma_xy, spacing=spacing)
    if backend == "lattice":
        return PermutohedralLattice(features)

    def exact(values: Tensor) -> Tensor:
        return dense_gaussian_filter(values, features)

    return exact


def filter_checked(affinity: Affinity, values: Tensor) -> Tensor:
    """``W v`` for ``values [B, C, *spatial]`` built from inputs that :func:`prepare_inputs`
    checked (finite, the affinity's batch, spatial size and compute dtype), inside a loss's
    autograd Function. A lattice (also a :class:`~weakseg.losses.GaussianAffinity`'s
    ``operator``) filters them with ``filter_flat``, without the value checks of its
    ``__call__`` (a pass over the values) and its autograd wrapper."""
    operator = getattr(affinity, "operator", affinity)
    if isinstance(operator, PermutohedralLattice) and values.dtype == operator.dtype:
        batch, channels = values.shape[:2]
        flat = values.reshape(batch, channels, -1).contiguous()
        return operator.filter_flat(flat).reshape(values.shape)
    return affinity(values)


def filter_segments(
    affinity: Affinity, segmentation: Tensor, mask: Tensor, with_degree: bool
) -> tuple[Tensor, Tensor | None]:
    """``(W S, W m)`` from a single filtering of K (+1) channels; ``W m`` only if asked for."""
    if not with_degree:
        return filter_checked(affinity, segmentation), None
    filtered = filter_checked(affinity, torch.cat([segmentation, mask], dim=1))  # (B, K + 1, ...)
    return filtered[:, :-1], filtered[:, -1:]


def spatial_sum(x: Tensor) -> Tensor:
    """``[B, K, *spatial] -> [B, K]``."""
    return x.flatten(2).sum(dim=2)


def spatial_dot(x: Tensor, y: Tensor) -> Tensor:
    """``sum_p x[b, k, p] y[b, k, p]`` as ``[B, K]`` for ``x [B, K, *spatial]`` and ``y`` of the
    same shape or ``[B, 1, *spatial]`` (broadcast over K), without materialising the product."""
    x, y = x.flatten(2), y.flatten(2)
    if y.shape[1] == 1 and x.shape[1] != 1:
        return torch.bmm(x, y.transpose(1, 2))[:, :, 0]
    return torch.einsum("bkn,bkn->bk", x, y)


def _per_image(x: Tensor, like: Tensor) -> Tensor:
    """``[B]`` or ``[B, K]`` -> broadcastable against ``like [B, K, *spatial]``."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _safe(x: Tensor) -> Tensor:
    # Only guards 0/0 (no valid pixel, or a class with no mass): the numerator is 0 there too.
    return x.clamp_min(torch.finfo(x.dtype).tiny)


def affinity_mass(mask: Tensor, degree: Tensor) -> Tensor:
    """``1'W1`` over the valid pixels, per image ``[B]`` (the ``"affinity"`` normalizer),
    kept from 0 (no valid pixel: the cut is 0 too)."""
    return _safe(spatial_dot(mask, degree)[:, 0])


def crf_value(
    segmentation: Tensor,
    ws: Tensor,
    degree: Tensor | None,
    mass: Tensor | None,
    normalization: str,
) -> Tensor:
    """Per-image dense CRF value ``[B]``: eq. (4) under the given normalization (``mass``:
    :func:`affinity_mass`, for ``"affinity"``)."""
    if normalization == "rloss":
        return -spatial_dot(segmentation, ws).sum(dim=1)
    if normalization == "rloss_original":
        return spatial_dot(segmentation, ws).sum(dim=1) * -RLOSS_ORIGINAL_SCALE
    assert degree is not None
    # S'W(m - S), summed over k
    cut = (spatial_dot(segmentation, degree) - spatial_dot(segmentation, ws)).sum(dim=1)
    if normalization == "none":
        return cut
    assert mass is not None
    return cut / mass


def rloss_scale(normalization: str) -> float:
    """The factor of the ``"rloss"``-type values: 1, or :data:`RLOSS_ORIGINAL_SCALE`."""
    return RLOSS_ORIGINAL_SCALE if normalization == "rloss_original" else 1.0


def crf_grad(ws: Tensor, degree: Tensor | None, mass: Tensor | None, normalization: str) -> Tensor:
    """d crf_value / d S ``[B, K, *spatial]``: ``W m - 2 W S``, eq. (11) plus the linear term."""
    if normalization in ("rloss", "rloss_original"):
        return ws * (-2.0 * rloss_scale(normalization))
    assert degree is not None
    grad = torch.add(degree, ws, alpha=-2)
    if normalization == "none":
        return grad
    assert mass is not None
    return grad.div_(_per_image(mass, grad))


def nc_terms(segmentation: Tensor, ws: Tensor, degree: Tensor) -> tuple[Tensor, Tensor]:
    """``(S_k'W S_k, d'S_k)``, the association and volume of each segment: ``[B, K]`` each."""
    return spatial_dot(segmentation, ws), spatial_dot(segmentation, degree)


def nc_value(association: Tensor, volume: Tensor) -> Tensor:
    """Per-image normalized cut ``[B]``: ``sum_k S_k'W(m - S_k) / d'S_k``, eq. (5), from
    :func:`nc_terms`."""
    return ((volume - association) / _safe(volume)).sum(dim=1)


def nc_grad(ws: Tensor, degree: Tensor, association: Tensor, volume: Tensor) -> Tensor:
    """d nc_value / d S: ``S_k'W S_k d / (d'S_k)^2 - 2 W S_k / d'S_k``, eq. (12)."""
    association = _per_image(association, ws)
    volume = _per_image(_safe(volume), ws)
    # (A / V) first: A <= V, so an empty class gives 0 instead of 0 / tiny^2 = NaN
    return (association / volume * degree - 2 * ws) / volume


def broadcast_grad(grad_value: Tensor, grad: Tensor) -> Tensor:
    """Chain rule for per-image values: ``grad_value [B]`` times ``grad [B, K, *spatial]``."""
    return grad * _per_image(grad_value, grad)
