"""The exact dense Gaussian filter: the reference every fast path is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg.filtering._checks import check_features, check_values

__all__ = ["dense_gaussian_filter"]

# Largest number of kernel entries (B x rows x N) materialised at once.
_CHUNK_ELEMENTS = 1 << 22


def dense_gaussian_filter(values: Tensor, features: Tensor) -> Tensor:
    r"""Exact Gaussian filtering in O(N^2) time and O(N) extra memory.

    .. math::
        \mathrm{out}_p = \sum_q \exp\left(-\tfrac{1}{2}\lVert f_p - f_q \rVert^2\right) v_q

    The self term (p = q, weight 1) is included. The kernel is evaluated in row blocks so the
    N x N matrix is never held at once. Differentiable with respect to ``values`` and ``features``
    by autograd. Use it as the reference in tests and as the exact path for tiny inputs.

    Args:
        values: Tensor[B, C, *spatial] (or [B, C, N]), float.
        features: Tensor[B, D, *spatial] (or [B, D, N]), already divided by the bandwidths,
            same dtype and device as ``values``.

    Returns:
        Tensor[B, C, *spatial], same shape as ``values``.

    Example:
        >>> feats = torch.randn(1, 2, 8, 8)
        >>> out = dense_gaussian_filter(torch.ones(1, 1, 8, 8), feats)
        >>> bool((out >= 1).all())  # every pixel has at least its own weight
        True
    """
    check_features(features)
    check_values(values, tuple(features.shape), features.device)
    if values.dtype != features.dtype:
        raise TypeError(
            f"values ({values.dtype}) and features ({features.dtype}) must have the same dtype"
        )
    batch, channels = values.shape[:2]
    flat_f = features.reshape(batch, features.shape[1], -1)  # (B, D, N)
    flat_v = values.reshape(batch, channels, -1)  # (B, C, N)
    n, dims = flat_f.shape[2], flat_f.shape[1]
    points = flat_f.transpose(1, 2)  # (B, N, D)
    # Differences rather than |a|^2 + |b|^2 - 2ab: no cancellation, so float32 stays accurate.
    rows = max(1, _CHUNK_ELEMENTS // max(1, batch * n * dims))
    chunks = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        diff = points[:, start:stop, None, :] - points[:, None, :, :]  # (B, rows, N, D)
        kernel = torch.exp(-0.5 * (diff * diff).sum(dim=3))  # (B, rows, N)
        chunks.append(torch.bmm(flat_v, kernel.transpose(1, 2)))  # (B, C, rows)
    return torch.cat(chunks, dim=2).reshape(values.shape)
