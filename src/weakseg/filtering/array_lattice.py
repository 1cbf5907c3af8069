"""The numba lattice on NumPy arrays, without importing torch.

For one-shot programs where importing PyTorch would cost more than the work itself (``weakseg
segment`` on one image: ``import torch`` takes ~2 s and ~500 MB). :class:`ArrayLattice` is the
operator of ``PermutohedralLattice(features, backend="numba")``: the same construction, the same
calibration sample, equal up to floating-point rounding (tested).
"""

from __future__ import annotations

import numpy as np

from weakseg.filtering._lattice_geometry import calibration_sample, mass_correction, refinement
from weakseg.filtering._lattice_numba import NumbaLattice

__all__ = ["ArrayLattice"]


class ArrayLattice:
    r"""Approximate dense Gaussian filtering of NumPy arrays: build once, filter often.

    .. math::
        \mathrm{out}_p \approx \sum_q \exp\left(-\tfrac{1}{2}\lVert f_p - f_q\rVert^2\right) v_q

    Args:
        features: float32/float64 array ``[D, N]`` (one image) or ``[B, D, N]``, already divided
            by the bandwidths. float64 features compute in float64, any other in float32.
        symmetric: the symmetric blur ``B^T B`` (default) or the classic one-way blur.
        calibrate: rescale to the exact degrees on a fixed sample (see
            :class:`~weakseg.filtering.PermutohedralLattice`).
        threads: numba threads (default: all of numba's).
        accuracy: 0, 1 or 2, as for :class:`~weakseg.filtering.PermutohedralLattice`.

    Example:
        >>> features = np.random.default_rng(0).normal(size=(5, 400)).astype(np.float32)
        >>> lattice = ArrayLattice(features)
        >>> lattice.filter(np.ones((2, 400), np.float32)).shape
        (2, 400)
    """

    def __init__(
        self,
        features: np.ndarray,
        *,
        symmetric: bool = True,
        calibrate: bool = True,
        threads: int | None = None,
        accuracy: int = 0,
    ) -> None:
        refined = refinement(accuracy, symmetric)
        features = np.asarray(features)
        if features.ndim not in (2, 3) or 0 in features.shape:
            raise ValueError(
                f"features must be a non-empty array [D, N] or [B, D, N], got shape "
                f"{features.shape}"
            )
        if not np.issubdtype(features.dtype, np.floating):
            raise TypeError(f"features must be a float array, got dtype {features.dtype}")
        self._single = features.ndim == 2
        batched = features[None] if self._single else features
        dtype = np.float64 if batched.dtype == np.float64 else np.float32
        batch, dims, n = batched.shape
        self.batch_size, self.dims, self.num_points, self.dtype = batch, dims, n, np.dtype(dtype)
        box = (batched.min(axis=(0, 2)), batched.max(axis=(0, 2)))
        if not (np.isfinite(box[0]).all() and np.isfinite(box[1]).all()):
            bad = int((~np.isfinite(batched)).sum())
            raise ValueError(f"features contains {bad} non-finite values (NaN or inf)")
        points = np.ascontiguousarray(batched.transpose(0, 2, 1).reshape(-1, dims), dtype=dtype)
        self._core = NumbaLattice(points, batch, n, box, symmetric, threads, refined)
        self.num_vertices = self._core.num_vertices
        self._scale = np.full(batch, mass_correction(dims, refined.scale), dtype=np.float64)
        if calibrate:
            samples, neighbors, weight = calibration_sample(n)
            exact = self._core.exact_degrees_array(points, samples, neighbors) * weight
            approx = self._core.lattice_degrees_array(samples) * self._scale[:, None]
            self._scale *= exact.sum(axis=1) / np.maximum(approx.sum(axis=1), 1e-30)

    def filter(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``W v`` for ``values [C, N]`` (``[B, C, N]`` for batched features), in the compute
        dtype; written into ``out`` (contiguous, same shape and dtype) when given."""
        values = np.asarray(values)
        expected = "[C, N]" if self._single else "[B, C, N]"
        batched = values[None] if self._single and values.ndim == 2 else values
        if (
            batched.ndim != 3
            or batched.shape[0] != self.batch_size
            or batched.shape[2] != self.num_points
        ):
            raise ValueError(
                f"values must have shape {expected} with N={self.num_points}"
                + ("" if self._single else f" and B={self.batch_size}")
                + f", got {values.shape}"
            )
        batched = np.ascontiguousarray(batched, dtype=self.dtype)
        target = None
        if out is not None:
            target = out[None] if self._single and out.ndim == 2 else out
        result = self._core.apply_array(batched, self._scale.astype(self.dtype), out=target)
        if out is not None:
            return out
        return result[0] if self._single else result

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, dims={self.dims}, "
            f"num_points={self.num_points}, num_vertices={self.num_vertices}, "
            f"dtype={self.dtype})"
        )
