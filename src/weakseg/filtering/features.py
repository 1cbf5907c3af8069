"""Feature builders for Gaussian affinities.

A feature map ``f`` of shape ``[B, D, *spatial]`` defines the affinity
``W_pq = exp(-|f_p - f_q|^2 / 2)`` between pixels (or voxels) ``p`` and ``q``. Every builder here
divides each feature by its bandwidth, so the filters never see a sigma. Position channels come
first, last spatial axis first (``x, y`` for images, ``x, y, z`` for volumes), measured in
physical units (index times ``spacing``); intensity channels follow in their input order.

Example:
    >>> images = torch.rand(2, 3, 64, 48) * 255
    >>> rgbxy_features(images, sigma_rgb=15.0, sigma_xy=80.0).shape
    torch.Size([2, 5, 64, 48])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from weakseg._validation import (
    check_floating,
    check_ndim,
    check_not_empty,
    check_positive,
    check_tensor,
)
from weakseg.filtering._checks import check_finite_on_cpu

__all__ = [
    "concat_features",
    "intensity_position_features",
    "intensity_xy_features",
    "position_features",
    "rgbxy_features",
    "volume_features",
]


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(spacing)
    if len(spacing) != ndim:
        raise ValueError(
            f"spacing must give one value per spatial axis ({ndim}), got {len(spacing)}: {spacing}"
        )
    return tuple(check_positive(f"spacing[{i}]", s) for i, s in enumerate(spacing))


def position_features(
    batch_size: int,
    spatial_shape: Sequence[int],
    sigma: float,
    *,
    spacing: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Pixel/voxel coordinates divided by ``sigma``: the smoothness-kernel features.

    Args:
        batch_size: B.
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.
        sigma: spatial bandwidth, in the units of ``spacing`` (pixels by default).
        spacing: physical size of one step along each spatial axis, in ``spatial_shape`` order.
        device, dtype: of the result.

    Returns:
        Tensor[B, len(spatial_shape), *spatial_shape]: channel 0 is the last axis (x), then y, z.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(spatial_shape) < 1 or any(s < 1 for s in spatial_shape):
        raise ValueError(f"spatial_shape must be non-empty with sizes >= 1, got {spatial_shape}")
    sigma = check_positive("sigma", sigma)
    steps = _check_spacing(spacing, len(spatial_shape))
    axes = [
        torch.arange(n, device=device, dtype=dtype) * (step / sigma)
        for n, step in zip(spatial_shape, steps, strict=True)
    ]
    grids = torch.meshgrid(*axes, indexing="ij")  # each (*spatial)
    coords = torch.stack(grids[::-1], dim=0)  # (nd, *spatial), x first
    return coords.unsqueeze(0).expand(int(batch_size), *coords.shape).contiguous()


def intensity_position_features(
    images: Tensor,
    sigma_intensity: float,
    sigma_position: float,
    *,
    spacing: Sequence[float] | None = None,
) -> Tensor:
    """Positions / ``sigma_position`` followed by intensities / ``sigma_intensity``.

    Works for images ``[B, C, H, W]`` and volumes ``[B, C, D, H, W]`` with any number of
    intensity channels C (1 for gray, 3 for RGB, more for multi-modal data).

    Args:
        images: Tensor[B, C, *spatial], float, intensities in the unit that ``sigma_intensity``
            is given in (0-255 for the usual RGB bandwidth of 15).
        sigma_intensity: intensity bandwidth (e.g. ``sigma_rgb``).
        sigma_position: spatial bandwidth (e.g. ``sigma_xy``), in the units of ``spacing``.
        spacing: physical size of one step along each spatial axis (voxel spacing).

    Returns:
        Tensor[B, nd + C, *spatial] with nd = number of spatial dims.
    """
    check_tensor("images", images)
    check_ndim("images", images, (4, 5), "[B, C, H, W] or [B, C, D, H, W]")
    check_not_empty("images", images)
    check_floating("images", images)
    check_finite_on_cpu("images", images)
    sigma_intensity = check_positive("sigma_intensity", sigma_intensity)
    positions = position_features(
        images.shape[0],
        images.shape[2:],
        sigma_position,
        spacing=spacing,
        device=images.device,
        dtype=images.dtype,
    )
    return torch.cat([positions, images / sigma_intensity], dim=1)


def intensity_xy_features(images: Tensor, sigma_intensity: float, sigma_xy: float) -> Tensor:
    """``[x, y, I_1..I_C]`` scaled features for 2D images with any channel count (gray, RGB, ...).

    Args:
        images: Tensor[B, C, H, W].
        sigma_intensity: intensity bandwidth; sigma_xy: spatial bandwidth in pixels.

    Returns:
        Tensor[B, 2 + C, H, W].
    """
    check_tensor("images", images)
    check_ndim("images", images, (4,), "[B, C, H, W]")
    return intensity_position_features(images, sigma_intensity, sigma_xy)


def rgbxy_features(images: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """The dense CRF's bilateral features ``[x/σxy, y/σxy, r/σrgb, g/σrgb, b/σrgb]``.

    Args:
        images: Tensor[B, 3, H, W], RGB in 0-255 (not network-normalized).
        sigma_rgb: colour bandwidth (15 in the paper); sigma_xy: spatial bandwidth (80-100).

    Returns:
        Tensor[B, 5, H, W].
    """
    check_tensor("images", images)
    check_ndim("images", images, (4,), "[B, 3, H, W]")
    if images.shape[1] != 3:
        raise ValueError(
            f"rgbxy_features expects 3 colour channels, got images of shape {tuple(images.shape)}; "
            "use intensity_xy_features for gray or multi-channel images"
        )
    return intensity_position_features(images, sigma_rgb, sigma_xy)


def volume_features(
    volumes: Tensor,
    sigma_intensity: float,
    sigma_xyz: float,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Tensor:
    """``[x, y, z, I_1..I_C]`` features for volumes, positions in physical units.

    Args:
        volumes: Tensor[B, C, D, H, W].
        sigma_intensity: intensity bandwidth.
        sigma_xyz: spatial bandwidth in physical units (e.g. mm).
        spacing: voxel size along (D, H, W), e.g. ``(10.0, 1.5, 1.5)`` for thick MRI slices.

    Returns:
        Tensor[B, 3 + C, D, H, W].
    """
    check_tensor("volumes", volumes)
    check_ndim("volumes", volumes, (5,), "[B, C, D, H, W]")
    return intensity_position_features(volumes, sigma_intensity, sigma_xyz, spacing=spacing)


def concat_features(*features: Tensor) -> Tensor:
    """Concatenate scaled feature maps along the channel dim, e.g. RGBXY plus network features.

    Every part must already be divided by its bandwidth; all parts need the same batch size,
    spatial size, device and dtype.

    Returns:
        Tensor[B, sum(D_i), *spatial].
    """
    if not features:
        raise ValueError("concat_features needs at least one feature tensor")
    first = check_tensor("features[0]", features[0])
    for i, part in enumerate(features):
        check_tensor(f"features[{i}]", part)
        check_floating(f"features[{i}]", part)
        if part.ndim < 3:
            raise ValueError(
                f"features[{i}] must have shape [B, D, *spatial], got {tuple(part.shape)}"
            )
        if part.shape[0] != first.shape[0] or part.shape[2:] != first.shape[2:]:
            raise ValueError(
                f"features[{i}] has shape {tuple(part.shape)}, incompatible with features[0] "
                f"of shape {tuple(first.shape)} (batch and spatial sizes must match)"
            )
        if part.device != first.device or part.dtype != first.dtype:
            raise ValueError(
                f"features[{i}] is {part.dtype} on {part.device}, "
                f"features[0] is {first.dtype} on {first.device}"
            )
    return torch.cat(features, dim=1)
