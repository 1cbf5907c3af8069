"""Permutohedral-lattice Gaussian filtering in pure PyTorch (Adams, Baek & Davis, 2010).

``W v`` with ``W_pq = exp(-|f_p - f_q|^2 / 2)`` in O(N (D + C)) instead of O(N^2): every point is
*splatted* onto the d + 1 vertices of the lattice simplex that encloses it (barycentric weights),
the lattice values are *blurred* with a small kernel along each of the d + 1 lattice directions,
and every point *slices* its result back from the same vertices: ``W = c S^T B^T B S``.

What differs from the classic implementation that the original rloss code uses:

* **Exactly symmetric.** The classic blur applies the d + 1 directional passes once, in one order.
  Passes along different directions stop commuting once absent lattice vertices cut the blur
  short, so that operator is only approximately symmetric (gaps up to 2e-3). Here the blur is
  ``B^T B`` with ``B = B_d ... B_0`` made of half-variance passes ``[1, 6, 1] / 8``, so ``W`` is
  symmetric by construction and a gradient computed with it is the true gradient of the value
  computed with it.
* **Unbiased in scale.** The classic output is ~0.55-0.62 of the exact sum. Here the analytic
  constant ``c = (2π)^{d/2} / V_cell`` gives the lattice kernel the Gaussian's mass, and a
  calibration on a fixed sample of points removes the bias that remains on real feature clouds
  (see :class:`PermutohedralLattice`).
* **Two backends, one operator.** The PyTorch backend (``_lattice_torch``) names the vertices
  with one sort of integer keys and splats, blurs and slices with CSR products: it runs on any
  device unchanged, with no compilation, and is the reference. On a GPU its build synchronizes
  with the host once (the vertex count) and a filtering not at all. The numba backend
  (``_lattice_numba``, numba being a core dependency) builds the same lattice with a hash table
  and fused parallel loops on the CPU, several times faster; it is tested equal to the
  reference. ``"auto"`` picks numba for CPU tensors and says once
  (:class:`BackendFallbackWarning`, naming the cause) when it has to fall back to PyTorch on
  the CPU: numba failing to import or compile, or a process forked after numba's OpenMP
  threads started (a DataLoader worker).

The operator is exactly linear in the values; it is constant with respect to the features
(gradients flow into ``values`` only).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from weakseg.filtering._checks import check_features, check_values
from weakseg.filtering._lattice_geometry import (
    Refinement,
    calibration_sample,
    mass_correction,
    refinement,
)
from weakseg.filtering._lattice_torch import TorchLatticeOps

if TYPE_CHECKING:
    from weakseg.filtering._lattice_numba import NumbaLatticeOps

__all__ = [
    "BackendFallbackWarning",
    "PermutohedralLattice",
    "numba_available",
    "numba_unusable_reason",
    "numba_usable",
    "preferred_backend",
]

Backend = Literal["auto", "torch", "numba"]

# What ``backend="auto"`` resolves to: "auto" (numba on the CPU where it can run), or a backend
# forced by ``WEAKSEG_LATTICE_BACKEND`` or :func:`preferred_backend`.
_BACKEND_ENV = "WEAKSEG_LATTICE_BACKEND"
_preferred: Backend = "auto"
# Why numba failed in this process once it did (import or first build), and whether that was
# reported: the fallback warns once per process.
_numba_failure: str | None = None
_fallback_reported = False


class BackendFallbackWarning(RuntimeWarning):
    """``backend="auto"`` runs the pure-PyTorch lattice on the CPU because numba cannot run;
    the message names the cause. Issued once per process."""


def numba_available() -> bool:
    """Whether numba is installed (a core dependency; it may still fail to import)."""
    return importlib.util.find_spec("numba") is not None


def numba_unusable_reason() -> str | None:
    """Why the numba backend cannot run in this process, or ``None`` if it can: numba missing
    or failing to import (or to compile, once a build tried), or a process forked after
    numba's OpenMP threads started (where numba would terminate it)."""
    if _numba_failure is not None:
        return _numba_failure
    if not numba_available():
        return "numba is not installed (pip install numba)"
    try:
        from weakseg.filtering._lattice_numba import usable_in_this_process
    except Exception as error:  # a broken install: llvmlite mismatch, missing libraries
        return _record_numba_failure(f"numba failed to import ({type(error).__name__}: {error})")
    if not usable_in_this_process():
        return (
            "this process was forked after numba's OpenMP threads started (a DataLoader "
            "worker, say), where numba's OpenMP layer would terminate it; set "
            "NUMBA_THREADING_LAYER=workqueue to use numba there"
        )
    return None


def numba_usable() -> bool:
    """Whether numba kernels can run here (see :func:`numba_unusable_reason`)."""
    return numba_unusable_reason() is None


def _record_numba_failure(reason: str) -> str:
    global _numba_failure
    _numba_failure = reason
    return reason


def _report_fallback(reason: str) -> None:
    global _fallback_reported
    if _fallback_reported:
        return
    _fallback_reported = True
    warnings.warn(
        f"weakseg: the permutohedral lattice runs its pure-PyTorch backend on the CPU (slower "
        f"than numba's) because {reason}",
        BackendFallbackWarning,
        stacklevel=4,
    )


@contextlib.contextmanager
def preferred_backend(backend: Backend) -> Iterator[None]:
    """Make ``backend="auto"`` lattices built inside the ``with`` block use ``backend``
    (``"torch"`` or ``"numba"``; ``"auto"`` restores the automatic choice), e.g. to run a
    loss on one backend. The environment variable ``WEAKSEG_LATTICE_BACKEND`` sets the same
    preference for a whole process. Not thread-local.

    Example:
        >>> with preferred_backend("torch"):
        ...     PermutohedralLattice(torch.randn(1, 2, 5, 5)).backend
        'torch'
    """
    _check_backend(backend)
    global _preferred
    previous, _preferred = _preferred, backend
    try:
        yield
    finally:
        _preferred = previous


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "torch", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")


def _resolve_backend(backend: str, device: torch.device) -> Backend:
    """The backend that runs: checks an explicit choice, resolves ``"auto"``."""
    _check_backend(backend)
    if backend == "auto":
        backend = _preferred
        if backend == "auto":
            backend = os.environ.get(_BACKEND_ENV, "auto") or "auto"
            if backend not in ("auto", "torch", "numba"):
                raise ValueError(
                    f"{_BACKEND_ENV} must be 'auto', 'torch' or 'numba', got {backend!r}"
                )
        if backend == "numba" and device.type != "cpu":
            backend = "auto"  # a preference for numba leaves GPU tensors on the GPU
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        reason = numba_unusable_reason()
        if reason is None:
            return "numba"
        _report_fallback(reason)
        return "torch"
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"backend='numba' runs on the CPU only, features are on {device}")
        reason = numba_unusable_reason()
        if reason is not None:
            error = ImportError if "import" in reason or "installed" in reason else RuntimeError
            raise error(f"backend='numba' cannot run: {reason}; use backend='auto' or 'torch' here")
    return backend  # type: ignore[return-value]


class PermutohedralLattice:
    r"""Approximate dense Gaussian filtering for many channels at once, built once, applied often.

    .. math::
        \mathrm{out}_p \approx \sum_q \exp\left(-\tfrac{1}{2}\lVert f_p - f_q\rVert^2\right) v_q

    (self term included). Construction does all the work that depends on the features (simplex
    search, vertex hashing, neighbour lookup, calibration); each call then splats, blurs along
    the ``D + 1`` lattice directions and back, and slices: O(N (D + C)) time and memory.

    Properties (tested against :func:`dense_gaussian_filter`): linear and exactly symmetric,
    ``<u, W v> = <W u, v>`` to floating-point rounding; unbiased in scale. Computes in float64 for
    float64 features and in float32 otherwise; returns the dtype of ``values``. Differentiable
    with respect to ``values`` (the backward pass is the same filter, since ``W`` is symmetric);
    the features are constants.

    ``symmetric=False`` trades the symmetry for speed: the classic one-way blur, one full-variance
    pass per direction instead of two half-variance ones (half the blur passes), for uses that
    need no symmetry, such as mean-field inference. Its backward pass applies ``W^T`` (the
    passes in reverse order), so gradients stay exact.

    Args:
        features: Tensor[B, D, *spatial] or Tensor[B, D, N], already divided by the bandwidths
            (see :func:`rgbxy_features` and friends). Any D >= 1, any number of spatial dims.
            Batch elements are filtered independently.
        calibrate: rescale each batch element's operator so that its degrees ``W 1`` match the
            exact ones on a fixed random sample of points (see Notes). ``False`` keeps only the
            analytic mass correction.
        backend: ``"torch"`` (any device, the reference), ``"numba"`` (CPU only) or
            ``"auto"``: numba for CPU tensors where it can run, else PyTorch with a
            :class:`BackendFallbackWarning` once per process; :func:`preferred_backend` or
            ``WEAKSEG_LATTICE_BACKEND=torch|numba`` override what ``"auto"`` picks.
        symmetric: ``True`` for the symmetric blur ``B^T B``; ``False`` for the one-way blur.
        accuracy: 0 (the classic lattice), 1 or 2: a finer lattice, with rings of vertices
            around the data, closer to the exact filter at a cost in vertices, time and memory
            (see Notes). 1 and 2 need ``symmetric=True``.

    Notes:
        Scale. The analytic constant ``(2π)^{D/2} / V_cell`` makes the lattice kernel integrate
        to the Gaussian's mass, which is exact when the features fill their space. Image features
        do not: colours lie near a low-dimensional manifold, where lattice vertices are missing and
        the kernel's shape (more peaked than a Gaussian) matters, leaving a global bias of up to
        ~30%. Calibration removes it: the exact degree of 256 sample points is estimated from up
        to 4096 sample neighbours (exactly, when N <= 4096) and divided by the lattice degree at
        the same points. Both samples are drawn from a fixed seed, so the operator is a
        deterministic function of the features, and one scalar per batch element keeps it linear
        and symmetric.

        Accuracy. The classic lattice (``accuracy=0``) is 0.07-0.16 off the exact filter on
        64x64 photo crops (relative L2 error at sigma_xy 5 and 80; 0.20-0.26 with 8-D
        features): its kernel is coarser than the Gaussian, and the mass that the blur moves to
        a vertex no point uses is dropped. ``accuracy=1`` makes the lattice 1.2x finer (the blur
        widened to keep the Gaussian's variance) and adds one ring of vertices without points
        around the occupied ones (their neighbours along every lattice direction), so that the
        blur carries mass past the edge of the data: errors 0.03-0.04 on the same crops,
        0.07-0.09 at 8-D. ``accuracy=2`` is 1.3x finer with two rings: 0.025-0.033, 0.05-0.065
        at 8-D. The cost is the vertices (memory and blur work follow them): 5-8x as many at
        level 1 (14x at 8-D), 15-25x at level 2 (90x at 8-D). Building and filtering 21
        channels of a 321x321 photo took 2.2-4x the time of level 0 at level 1 and 3.7-14x at
        level 2 on the numba backend (sigma_xy 80 to 5), 1.5-1.9x and 2.3-4.4x on the PyTorch
        one on the CPU (``benchmarks/filtering_accuracy.py``, 2 threads, measured under load).
        The PyTorch build synchronizes with a GPU once more per ring.

    Example:
        >>> images = torch.rand(1, 3, 32, 32) * 255
        >>> lattice = PermutohedralLattice(rgbxy_features(images, sigma_rgb=15.0, sigma_xy=5.0))
        >>> probs = torch.softmax(torch.randn(1, 21, 32, 32), dim=1)
        >>> lattice(probs).shape
        torch.Size([1, 21, 32, 32])
    """

    def __init__(
        self,
        features: Tensor,
        *,
        calibrate: bool = True,
        backend: Backend = "auto",
        symmetric: bool = True,
        accuracy: int = 0,
    ) -> None:
        check_features(features, finite=False)  # the backends check it from the key bounds
        refined = refinement(accuracy, symmetric)
        requested, backend = backend, _resolve_backend(backend, features.device)
        self.symmetric, self.accuracy = symmetric, int(accuracy)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        self.batch_size, self.dims = features.shape[0], features.shape[1]
        self.spatial_shape = tuple(features.shape[2:])
        self.num_points = math.prod(self.spatial_shape)
        self.dtype, self.device = dtype, features.device
        self._template_shape = tuple(features.shape)
        # (B, d, N): the numba backend reads the features in this layout, without a copy.
        flat = features.detach().to(dtype).reshape(self.batch_size, self.dims, self.num_points)
        with torch.no_grad():
            self._ops: TorchLatticeOps | NumbaLatticeOps
            if backend == "numba":
                try:
                    self._ops = _numba_ops(features, flat, symmetric, refined)
                except Exception as error:
                    if requested != "auto" or not _is_numba_failure(error):
                        raise
                    # numba imported but cannot compile or run its kernels here.
                    reason = f"numba's kernels failed ({type(error).__name__}: {error})"
                    _report_fallback(_record_numba_failure(reason))
                    backend = "torch"
            if backend == "torch":
                self._ops = TorchLatticeOps(flat, symmetric, refined)
            self.backend = backend
            self.num_vertices = self._ops.num_vertices
            self._batch_scale = torch.full(
                (self.batch_size,),
                mass_correction(self.dims, refined.scale),
                dtype=dtype,
                device=self.device,
            )
            if calibrate:
                self._calibrate(flat)

    def _calibrate(self, features: Tensor) -> None:
        """Match each batch element's degrees ``W 1`` to the exact ones on a fixed sample
        (``features [B, d, N]`` in the compute dtype)."""
        samples, neighbors, weight = _calibration_indices(self.num_points, self.device)
        exact = self._ops.exact_degrees(features, samples, neighbors) * weight  # (B, S)
        approx = self._ops.lattice_degrees(samples) * self._batch_scale[:, None]  # (B, S)
        self._batch_scale *= exact.sum(dim=1) / approx.sum(dim=1).clamp_min(1e-30)

    def filter_flat(
        self,
        values: Tensor,
        *,
        in_weight: Tensor | None = None,
        out_weight: Tensor | None = None,
        out: Tensor | None = None,
        accumulate: bool = False,
        transpose: bool = False,
    ) -> Tensor:
        """``W v`` (``W^T v`` if ``transpose``) for ``values [B, C, N]`` in the compute dtype:
        no checks, no autograd.

        With per-point weights ``[B, N]``, ``diag(out_weight) W diag(in_weight) v`` (e.g. the
        symmetric normalization :math:`D^{-1/2} W D^{-1/2}`), which the numba backend folds
        into its splat and slice instead of spending passes over the values. ``out``
        (contiguous ``[B, C, N]``, compute dtype) receives the result, or accumulates it when
        ``accumulate``; a new tensor is returned otherwise.
        """
        return self._ops.apply(
            values, self._batch_scale, in_weight, out_weight, out, accumulate, transpose
        )

    def __call__(self, values: Tensor) -> Tensor:
        """Filter ``values [B, C, *spatial]`` (the features' layout); returns the same shape."""
        # Finiteness only on the CPU, where it is one cheap pass: on a GPU it would cost a host
        # synchronization per call, and NaN or inf in the values only propagate to the output
        # (they never reach the lattice's indices).
        check_values(values, self._template_shape, self.device, finite=self.device.type == "cpu")
        batch, channels = values.shape[:2]
        flat = values.to(self.dtype).reshape(batch, channels, self.num_points)
        out = _LatticeFilter.apply(flat, self)
        return out.reshape(values.shape).to(values.dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, dims={self.dims}, "
            f"spatial_shape={self.spatial_shape}, num_vertices={self.num_vertices}, "
            f"accuracy={self.accuracy}, "
            f"backend={self.backend!r}, dtype={self.dtype}, device={self.device})"
        )


@functools.lru_cache(maxsize=16)
def _calibration_indices(num_points: int, device: torch.device) -> tuple[Tensor, Tensor, float]:
    """:func:`calibration_sample` with the indices on ``device``, copied there once per size
    (each copy of host data to a GPU synchronizes it); never written to."""
    samples, neighbors, weight = calibration_sample(num_points)
    return torch.from_numpy(samples).to(device), torch.from_numpy(neighbors).to(device), weight


def _numba_ops(
    features: Tensor, flat: Tensor, symmetric: bool, refined: Refinement
) -> NumbaLatticeOps:
    """The numba backend's lattice of ``flat [B, d, N]`` (the features in the compute dtype)."""
    from weakseg.filtering._lattice_numba import NumbaLatticeOps

    # Bounds of the features in their own layout: cheaper than over ``points``.
    dims = [0, *range(2, features.ndim)]
    feature_range = (features.detach().amin(dim=dims), features.detach().amax(dim=dims))
    if not bool(torch.isfinite(feature_range[0]).all() & torch.isfinite(feature_range[1]).all()):
        bad = int((~torch.isfinite(features)).sum())  # NaN and inf propagate into the bounds
        raise ValueError(f"features contains {bad} non-finite values (NaN or inf)")
    return NumbaLatticeOps(
        flat,
        flat.shape[0],
        flat.shape[2],
        feature_range,
        symmetric,
        refined,
    )


def _is_numba_failure(error: Exception) -> bool:
    """An error of numba's compiler or runtime (not of the input, which the PyTorch backend
    would reject as well)."""
    try:
        from numba.core.errors import NumbaError
    except Exception:
        return True
    return isinstance(error, (NumbaError, ImportError, OSError))


class _LatticeFilter(torch.autograd.Function):
    """``out = W v`` with backward ``grad_v = W^T grad_out`` (``W`` itself when symmetric)."""

    @staticmethod
    def forward(ctx, values: Tensor, lattice: PermutohedralLattice) -> Tensor:  # type: ignore[override]
        ctx.lattice = lattice
        return lattice.filter_flat(values)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return ctx.lattice.filter_flat(grad_out.contiguous(), transpose=True), None
