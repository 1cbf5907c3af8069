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


def check_bool(name: str, value: object) -> bool:
    """Raise TypeError unless ``value`` is ``True`` or ``False`` (not 0/1); return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``; return it."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return str(value)


def check_nonnegative(name: str, value: float) -> float:
    """Raise unless ``value`` is a finite number >= 0; return it as float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (0 <= number < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_n_iter(n_iter: int) -> int:
    """``n_iter`` must be an int >= 0 (bools rejected)."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int):
        raise TypeError(f"n_iter must be an int, got {type(n_iter).__name__}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    return n_iter


def check_valid_mask(
    valid_mask: Tensor | None, like: Tensor, like_name: str = "probs"
) -> Tensor | None:
    """``valid_mask``: None or a bool tensor ``[B, *spatial]`` matching ``like [B, K, *spatial]``
    and on its device; returned unchanged."""
    if valid_mask is None:
        return None
    check_tensor("valid_mask", valid_mask)
    if valid_mask.dtype != torch.bool:
        raise TypeError(
            f"valid_mask must be a bool tensor, got dtype {valid_mask.dtype}; use mask.bool()"
        )
    expected = (like.shape[0], *like.shape[2:])
    if tuple(valid_mask.shape) != expected:
        raise ValueError(
            f"valid_mask must have shape [B, *spatial] = {expected} to match {like_name} of "
            f"shape {tuple(like.shape)}, got {tuple(valid_mask.shape)}"
        )
    check_same_device("valid_mask", valid_mask, like_name, like)
    return valid_mask


def check_labels(
    labels: Tensor,
    logits: Tensor,
    ignore_index: int = 255,
    name: str = "labels",
    *,
    check_values: bool = True,
) -> None:
    """``labels [B, *spatial]``: integer class ids in ``0..K-1`` or ``ignore_index``, matching
    ``logits [B, K, *spatial]`` and on its device.

    The value check reads one number back from the device (a host synchronization);
    ``check_values=False`` skips it where the caller has checked the labels already.
    """
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
    if not check_values:
        return
    num_classes = logits.shape[1]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad])[:10].tolist()
        raise ValueError(
            f"{name} must hold class ids in 0..{num_classes - 1} or ignore_index={ignore_index}, "
            f"got {values}"
        )


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
