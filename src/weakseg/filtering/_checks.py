"""Input checks shared by the exact and the lattice filters."""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg._validation import (
    check_finite,
    check_floating,
    check_not_empty,
    check_tensor,
)


def check_finite_on_cpu(name: str, value: Tensor) -> None:
    """:func:`check_finite` on the CPU, where it is one cheap pass; elsewhere nothing, since
    reading the answer back would synchronize the host with the device (the filters reject
    non-finite features themselves, the lattice within its build's one synchronization)."""
    if value.device.type == "cpu":
        check_finite(name, value)


def check_features(features: Tensor, *, finite: bool = True) -> None:
    """``features``: a finite, non-empty float tensor ``[B, D, *spatial]`` or ``[B, D, N]``.

    ``finite=False`` leaves the finiteness to the caller (the lattice backends check it from
    the bounds they compute anyway, saving a pass and a host synchronization)."""
    check_tensor("features", features)
    if features.ndim < 3:
        raise ValueError(
            "features must have shape [B, D, *spatial] or [B, D, N] (at least 3 dims), "
            f"got {features.ndim} dims with shape {tuple(features.shape)}"
        )
    check_not_empty("features", features)
    check_floating("features", features)
    if finite:
        check_finite("features", features)


def check_values(
    values: Tensor, features_shape: tuple[int, ...], device: torch.device, *, finite: bool = True
) -> None:
    """``values [B, C, *spatial]`` must match the features' batch size, layout and device, and
    be finite if ``finite``."""
    check_tensor("values", values)
    if values.ndim != len(features_shape):
        raise ValueError(
            f"values must have the layout of features ([B, C] + spatial {tuple(features_shape[2:])}"
            f"), got {values.ndim} dims with shape {tuple(values.shape)} for features of shape "
            f"{tuple(features_shape)}"
        )
    check_not_empty("values", values)
    check_floating("values", values)
    if values.shape[0] != features_shape[0]:
        raise ValueError(
            f"batch size mismatch: values has {values.shape[0]} (shape {tuple(values.shape)}), "
            f"features has {features_shape[0]} (shape {tuple(features_shape)})"
        )
    if tuple(values.shape[2:]) != tuple(features_shape[2:]):
        raise ValueError(
            f"spatial size mismatch: values has {tuple(values.shape[2:])} (shape "
            f"{tuple(values.shape)}), features has {tuple(features_shape[2:])} (shape "
            f"{tuple(features_shape)})"
        )
    if values.device != device:
        raise ValueError(f"values is on {values.device} but features are on {device}")
    if finite:
        check_finite("values", values)
