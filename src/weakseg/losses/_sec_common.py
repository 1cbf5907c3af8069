"""Helpers of the SEC losses (:mod:`weakseg.losses.sec`): dtypes, a finite log, 0/1 checks."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(probs: Tensor) -> torch.dtype:
    """float64 for float64 ``probs``, else float32 (half-precision outputs are upcast)."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def safe_log(x: Tensor) -> Tensor:
    """``log(x)`` with ``x`` clamped to the dtype's smallest normal number."""
    # log(0) would give -inf and a NaN gradient; tiny keeps both finite (-87 in float32).
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def check_binary(name: str, value: Tensor, layout: str) -> Tensor:
    """A bool view of a bool or 0/1 tensor; ValueError for any other value."""
    if value.dtype == torch.bool:
        return value
    if value.is_complex():
        raise TypeError(f"{name} must be a bool or 0/1 tensor {layout}, got dtype {value.dtype}")
    bad = (value != 0) & (value != 1)
    if bool(bad.any()):
        shown = sorted({float(v) for v in value[bad].flatten()[:5].tolist()})
        raise ValueError(
            f"{name} must hold only 0/1 (or bool) values {layout}, got {int(bad.sum())} "
            f"entries such as {shown}"
        )
    return value != 0
