"""Brute-force references for the loss tests: W built densely, losses as plain tensor algebra.

Nothing here uses weakseg code, so the tests compare two independent implementations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _coordinates(spatial: Sequence[int], spacing: Sequence[float] | None) -> Tensor:
    """``[N, nd]`` physical coordinates of the pixels in row-major order."""
    spacing = (1.0,) * len(spatial) if spacing is None else spacing
    axes = [torch.arange(n, dtype=torch.float64) * s for n, s in zip(spatial, spacing, strict=True)]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def dense_affinity(
    images: Tensor, sigma_rgb: float, sigma_xy: float, spacing: Sequence[float] | None = None
) -> Tensor:
    """``W [B, N, N]``, ``W_pq = exp(-|x_p - x_q|^2 / 2 sxy^2 - |I_p - I_q|^2 / 2 srgb^2)``."""
    images = images.detach().double().cpu()
    batch, channels = images.shape[:2]
    positions = _coordinates(images.shape[2:], spacing)  # (N, nd)
    colours = images.reshape(batch, channels, -1).transpose(1, 2)  # (B, N, C)
    d_pos = (positions[:, None] - positions[None]).square().sum(-1) / sigma_xy**2  # (N, N)
    d_col = (colours[:, :, None] - colours[:, None]).square().sum(-1) / sigma_rgb**2  # (B, N, N)
    return torch.exp(-0.5 * (d_pos + d_col))


def grid_affinity(
    images: Tensor, sigma_rgb: float, connectivity: int, spacing: Sequence[float] | None = None
) -> Tensor:
    """Sparse contrast-sensitive ``W [B, N, N]`` built by looping over all pixel pairs."""
    images = images.detach().double().cpu()
    batch, channels = images.shape[:2]
    spatial = images.shape[2:]
    spacing = (1.0,) * len(spatial) if spacing is None else spacing
    index = list(itertools.product(*[range(n) for n in spatial]))
    colours = images.reshape(batch, channels, -1)
    w = torch.zeros(batch, len(index), len(index), dtype=torch.float64)
    for p, a in enumerate(index):
        for q, b in enumerate(index):
            step = [abs(i - j) for i, j in zip(a, b, strict=True)]
            if p == q or max(step) > 1:
                continue
            if connectivity in (4, 6) and sum(step) != 1:
                continue
            dist = math.sqrt(sum((s * h) ** 2 for s, h in zip(step, spacing, strict=True)))
            contrast = (colours[:, :, p] - colours[:, :, q]).square().sum(1)
            w[:, p, q] = torch.exp(-contrast / (2 * sigma_rgb**2)) / dist
    return w


def _flatten(probs: Tensor, valid_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(S [B, K, N], m [B, N])`` in float64 with excluded pixels zeroed (autograd kept)."""
    batch, classes = probs.shape[:2]
    s = probs.double().cpu().reshape(batch, classes, -1)
    if valid_mask is None:
        m = torch.ones(batch, s.shape[2], dtype=torch.float64)
    else:
        m = valid_mask.cpu().reshape(batch, -1).double()
    return s * m[:, None], m


def crf_reference(
    w: Tensor, probs: Tensor, valid_mask: Tensor | None, normalization: str
) -> Tensor:
    """Batch mean of ``sum_k S_k'W(m - S_k)`` (/ m'Wm for "affinity"), or ``-sum S'WS / B``."""
    s, m = _flatten(probs, valid_mask)
    ws = torch.einsum("bpq,bkq->bkp", w, s)
    if normalization == "rloss":
        return -(s * ws).sum() / s.shape[0]
    cut = (s * (torch.einsum("bpq,bq->bp", w, m)[:, None] - ws)).sum(dim=(1, 2))
    if normalization == "affinity":
        cut = cut / torch.einsum("bp,bpq,bq->b", m, w, m)
    return cut.mean()


def nc_reference(w: Tensor, probs: Tensor, valid_mask: Tensor | None) -> Tensor:
    """Batch mean of ``sum_k S_k'W(m - S_k) / d'S_k`` with ``d = W m``."""
    s, m = _flatten(probs, valid_mask)
    d = torch.einsum("bpq,bq->bp", w, m)
    cut = torch.einsum("bkp,bpq,bq->bk", s, w, m) - torch.einsum("bkp,bpq,bkq->bk", s, w, s)
    return (cut / torch.einsum("bp,bkp->bk", d, s)).sum(dim=1).mean()


def operator_matrix(operator, batch: int, spatial: Sequence[int], device: str) -> Tensor:
    """The dense matrix ``[B, N, N]`` (float64, CPU) of a linear filter, one column per pixel."""
    n = math.prod(spatial)
    eye = torch.eye(n, dtype=torch.float64, device=device)
    eye = eye.expand(batch, n, n).reshape(batch, n, *spatial).contiguous()
    with torch.no_grad():
        columns = operator(eye)  # (B, N, *spatial): channel q holds W e_q
    return columns.reshape(batch, n, n).transpose(1, 2).cpu()


def softmax_probs(batch: int, classes: int, *spatial: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *spatial, generator=generator, dtype=torch.float64)
    return (2 * logits).softmax(dim=1)


def random_images(batch: int, channels: int, *spatial: int, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *spatial, generator=generator, dtype=torch.float64) * 255
