"""Input checks shared by the exact and the lattice filters."""

from __future__ import annotations

from torch import Tensor

from weakseg._validation import (
    check_finite,
    check_floating,
    check_not_empty,
    check_same_batch_and_spatial,
    check_same_device,
    check_tensor,
)


def check_features(features: Tensor) -> None:
    """``features`` must be a finite, non-empty float tensor ``[B, D, *spatial]`` or ``[B, D, N]``."""
    check_tensor("features", features)
    if features.ndim < 3:
        raise ValueError(
            "features must have shape [B, D, *spatial] or [B, D, N] (at least 3 dims), "
            f"got {features.ndim} dims with shape {tuple(features.shape)}"
        )
    check_not_empty("features", features)
    check_floating("features", features)
    check_finite("features", features)


def check_values(values: Tensor, features: Tensor) -> None:
    """``values [B, C, *spatial]`` must match ``features`` in batch, layout, device and dtype."""
    check_tensor("values", values)
    if values.ndim != features.ndim:
        raise ValueError(
            f"values must have the layout of features ([B, C] + spatial {tuple(features.shape[2:])}"
            f"), got {values.ndim} dims with shape {tuple(values.shape)} for features of shape "
            f"{tuple(features.shape)}"
        )
    check_not_empty("values", values)
    check_floating("values", values)
    check_same_batch_and_spatial("values", values, "features", features)
    check_same_device("values", values, "features", features)
    check_finite("values", values)
