"""Integer-factor grid changes for the coarse-to-fine schedule, in NumPy, for any number of
spatial dims: block means of images, block votes of scribbles, linear upsampling of
probabilities. The coarse point ``j`` along an axis covers the fine points
``j f .. j f + f - 1`` (the last block is padded by repeating the edge)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["coarse_shape", "downsample_labels", "downsample_mean", "upsample_linear"]


def coarse_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """Spatial shape after dividing every axis by ``factor`` (rounded up)."""
    return tuple(-(-n // factor) for n in shape)


def _blocks(array: np.ndarray, factor: int, spatial: int) -> np.ndarray:
    """``array [..., *spatial]`` padded (edge) and reshaped to ``[..., n0, f, n1, f, ...]``."""
    lead = array.ndim - spatial
    shape = array.shape[lead:]
    pad = [(0, 0)] * lead + [(0, -n % factor) for n in shape]
    padded = np.pad(array, pad, mode="edge")
    split = []
    for n in coarse_shape(shape, factor):
        split += [n, factor]
    return padded.reshape(*array.shape[:lead], *split)


def downsample_mean(values: np.ndarray, factor: int, spatial: int) -> np.ndarray:
    """Block means of ``values [..., *spatial]`` (``spatial`` trailing axes) by ``factor``."""
    if factor == 1:
        return values
    blocks = _blocks(values, factor, spatial)
    lead = values.ndim - spatial
    axes = tuple(lead + 2 * i + 1 for i in range(spatial))
    return blocks.mean(axis=axes, dtype=np.float64).astype(values.dtype)


def downsample_labels(
    labels: np.ndarray, factor: int, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Coarse labels ``[*coarse]``: in each block, the most frequent labeled class (lowest id on
    ties), ``ignore_index`` where the block holds no label. A one-pixel stroke survives."""
    if factor == 1:
        return labels
    spatial = labels.ndim
    counts = np.stack([(labels == k).astype(np.int32) for k in range(num_classes)])
    blocks = _blocks(counts, factor, spatial)
    # Edge padding stays inside the last block, so it adds votes only where a label already is.
    axes = tuple(1 + 2 * i + 1 for i in range(spatial))
    votes = blocks.sum(axis=axes)  # (K, *coarse)
    best = votes.argmax(axis=0)
    return np.where(votes.max(axis=0) > 0, best, ignore_index).astype(labels.dtype)


def upsample_linear(values: np.ndarray, shape: Sequence[int], factor: int) -> np.ndarray:
    """Linear interpolation of ``values [C, *coarse]`` onto the fine grid ``shape``, with the
    coarse point ``j`` at the centre ``j f + (f - 1) / 2`` of its block (clamped at the ends)."""
    if factor == 1:
        return values
    out = values
    for axis, n in enumerate(shape):
        length = out.shape[1 + axis]
        position = (np.arange(n) - (factor - 1) / 2.0) / factor
        position = np.clip(position, 0.0, length - 1.0)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, length - 1)
        frac = (position - low).astype(values.dtype)
        view = [1] * out.ndim
        view[1 + axis] = n
        frac = frac.reshape(view)
        out = (
            np.take(out, low, axis=1 + axis) * (1 - frac) + np.take(out, high, axis=1 + axis) * frac
        )
    return out
