"""Checks shared by every public entry point: they raise real exceptions whose message names
the argument, the offending shape or value, and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_tensor(name: str, value: object) -> Tensor:
    """Raise TypeError unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, value: Tensor) -> None:
    """Raise TypeError for integer, bool or complex tensors."""
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")


def check_ndim(name: str, value: Tensor, allowed: Sequence[int], layout: str) -> None:
    """Raise ValueError unless ``value.ndim`` is one of ``allowed``; ``layout`` describes it."""
    if value.ndim not in allowed:
        raise ValueError(
            f"{name} must have shape {layout} ({' or '.join(map(str, allowed))} dims), "
            f"got {value.ndim} dims with shape {tuple(value.shape)}"
        )


def check_not_empty(name: str, value: Tensor) -> None:
    """Raise ValueError when any dimension has size 0."""
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")


def check_finite(name: str, value: Tensor) -> None:
    """Raise ValueError when ``value`` holds NaN or infinity."""
    # NaN and inf propagate into the sum, so one reduction clears the common case cheaply; the
    # elementwise test runs only when the sum is not finite (bad entries, or a finite overflow).
    if bool(torch.isfinite(value.sum())):
        return
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or inf)")


def check_same_batch_and_spatial(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError unless ``a`` and ``b`` agree on dim 0 (batch) and dims 2.. (spatial)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch size mismatch: {name_a} has {a.shape[0]} (shape {tuple(a.shape)}), "
            f"{name_b} has {b.shape[0]} (shape {tuple(b.shape)})"
        )
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"spatial size mismatch: {name_a} has {tuple(a.shape[2:])} (shape {tuple(a.shape)}), "
            f"{name_b} has {tuple(b.shape[2:])} (shape {tuple(b.shape)})"
        )


def check_same_device(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError when ``a`` and ``b`` live on different devices."""
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def check_positive(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite number > 0; return it as float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (number > 0 and number < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number
