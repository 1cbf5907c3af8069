"""Geometry shared by the lattice backends: elevation, scale, blur weights and integer keys.

Points are elevated onto the hyperplane ``sum(x) = 0`` of R^{d+1}, where the permutohedral
lattice ``A_d*`` lives: the points whose coordinates are all congruent to some remainder ``k``
modulo ``d + 1``. A lattice vertex of remainder k is stored as ``q = (x - k) / (d + 1)`` over its
first d coordinates (the last follows from ``sum = 0``), encoded in mixed radix, times ``d + 1``,
plus k, plus an offset per batch element: one int64 key per vertex.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch-free at run time: the array lattice runs without it
    import torch
    from torch import Tensor

# Adams et al.'s scaling: features times sqrt(2/3) (d + 1) in elevated coordinates. With it, splat
# and slice add a variance of 1/4 per feature dimension and one [1, 2, 1] / 4 blur per direction
# adds 3/4, so the lattice kernel has unit variance like the Gaussian it stands for.
INV_STD_FACTOR = math.sqrt(2.0 / 3.0)
# The blur B^T B: two half-variance passes [1, 6, 1] / 8 per direction, one in each half; the
# one-way blur of the classic implementation: one pass [1, 2, 1] / 4 per direction (both at
# scale 1, see BlurPlan.for_dims).


@dataclass(frozen=True)
class Refinement:
    """How much finer than the classic lattice one is: ``scale`` multiplies the features before
    elevation (the lattice's steps shrink by it in feature space, so the blur widens to keep
    the Gaussian's variance), and ``rings`` layers of vertices without points are added around
    the occupied ones (the neighbours along every lattice direction, both ways, ``rings``
    times), so that the blur no longer drops the mass it moves past the edge of the data."""

    scale: float
    rings: int


# PermutohedralLattice(accuracy=...): 0 is the classic lattice. Measured on 64x64 photo crops
# and 8-D features (benchmarks/filtering_accuracy.py): finer alone loses more mass at absent
# vertices (error up), the rings alone help a little, together the error drops 2-4x.
ACCURACY_LEVELS = (Refinement(1.0, 0), Refinement(1.2, 1), Refinement(1.3, 2))


def refinement(accuracy: object, symmetric: bool = True) -> Refinement:
    """The :class:`Refinement` of an ``accuracy`` level; ValueError for anything else."""
    if isinstance(accuracy, bool) or not isinstance(accuracy, int | np.integer):
        raise ValueError(f"accuracy must be 0, 1 or 2, got {accuracy!r}")
    if not 0 <= accuracy < len(ACCURACY_LEVELS):
        raise ValueError(f"accuracy must be 0, 1 or 2, got {accuracy!r}")
    if accuracy and not symmetric:
        raise ValueError(
            f"accuracy={accuracy} needs the symmetric blur (symmetric=True): the one-way blur's "
            "single pass per direction cannot widen that far"
        )
    return ACCURACY_LEVELS[int(accuracy)]


@dataclass(frozen=True)
class BlurPlan:
    """The blur as a sequence of passes ``[neighbor, center, neighbor]`` along lattice
    directions, applied in ``directions`` order (its transpose applies them in reverse)."""

    directions: tuple[int, ...]
    center: float
    neighbor: float

    @classmethod
    def for_dims(cls, d: int, symmetric: bool, scale: float = 1.0) -> BlurPlan:
        """``B^T B`` (half-variance passes along 0..d, then d..0: a palindrome, so the operator
        is symmetric) or, if not ``symmetric``, the classic one-way blur (full-variance passes
        along 0..d: half the passes, same variance per direction, not symmetric).

        At lattice ``scale`` s the kernel must have variance s^2 in lattice units, of which
        splat and slice give 1/4: the blur adds ``(4 s^2 - 1) / 6`` squared steps along each
        direction, ``2 n`` per pass ``[n, 1 - 2n, n]`` (s = 1: the passes above)."""
        forward = tuple(range(d + 1))
        if symmetric:
            neighbor = (4.0 * scale * scale - 1.0) / 24.0
            return cls(forward + forward[::-1], 1.0 - 2.0 * neighbor, neighbor)
        neighbor = (4.0 * scale * scale - 1.0) / 12.0
        return cls(forward, 1.0 - 2.0 * neighbor, neighbor)

    def transposed(self) -> BlurPlan:
        """The plan of the transposed blur (the same plan for a symmetric one)."""
        return BlurPlan(self.directions[::-1], self.center, self.neighbor)


# Calibration ignores pairs farther apart: each adds less than exp(-20) ~ 2e-9 to a degree >= 1.
NEGLIGIBLE_SQ_DISTANCE = 40.0
# Keys are int64: the largest key range used, with room for the batch index.
MAX_KEY = 1 << 62


def elevation_array(d: int, scale: float = 1.0) -> np.ndarray:
    """``E [d + 1, d]`` (float64) mapping features onto the hyperplane ``sum(x) = 0`` of
    R^{d+1}. Its columns are orthogonal with norm ``inv_std = sqrt(2/3) (d + 1)`` (times the
    lattice ``scale``)."""
    inv_std = INV_STD_FACTOR * (d + 1) * scale
    matrix = np.zeros((d + 1, d), dtype=np.float64)
    for j in range(d):
        scale = inv_std / math.sqrt((j + 1) * (j + 2))
        matrix[: j + 1, j] = scale
        matrix[j + 1, j] = -(j + 1) * scale
    return matrix


def elevation_matrix(
    d: int, dtype: torch.dtype, device: torch.device | str = "cpu", scale: float = 1.0
) -> Tensor:
    """:func:`elevation_array` as a tensor of ``dtype`` on ``device``."""
    import torch

    return torch.from_numpy(elevation_array(d, scale)).to(dtype=dtype, device=device)


# Calibration: points whose exact degree is estimated, and points the estimate sums over.
CALIBRATION_POINTS = 256
CALIBRATION_NEIGHBORS = 4096
CALIBRATION_SEED = 0


def calibration_sample(num_points: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The fixed sample of the lattices' calibration, the same for every backend and entry
    point: ``(samples [S], neighbors [Q], weight)``, int64 point indices within a batch
    element and the factor that turns a sum over ``neighbors`` into one over all points
    (all points, weight 1, when there are at most 4096)."""
    generator = np.random.default_rng(CALIBRATION_SEED)
    samples = generator.integers(num_points, size=min(num_points, CALIBRATION_POINTS))
    if num_points <= CALIBRATION_NEIGHBORS:
        return samples, np.arange(num_points), 1.0
    neighbors = generator.integers(num_points, size=CALIBRATION_NEIGHBORS)
    return samples, neighbors, num_points / CALIBRATION_NEIGHBORS


def mass_correction(d: int, scale: float = 1.0) -> float:
    """``(2π)^{d/2} / V_cell``: makes the lattice kernel integrate to the Gaussian's mass.

    Splat and slice weights sum to one and the blur passes preserve mass, so in the continuum
    limit the kernel integrates to the volume per lattice vertex. The vertices (all remainders)
    form a lattice of covolume ``sqrt(d+1) (d+1)^(d-1)`` in elevated coordinates, where lengths
    are ``inv_std`` (times the lattice ``scale``) times those in feature space.
    """
    inv_std = INV_STD_FACTOR * (d + 1) * scale
    cell_volume = math.sqrt(d + 1) * (d + 1) ** (d - 1) / inv_std**d
    return (2.0 * math.pi) ** (d / 2.0) / cell_volume


def check_key_range(cells: float, extra: int, d: int) -> None:
    """Raise ValueError when ``cells`` lattice cells times ``extra`` values per cell (vertex
    remainders, batch elements) do not fit in int64 keys."""
    if cells * extra >= MAX_KEY:
        raise ValueError(
            f"features span too many lattice cells to index ({cells:.4g} cells in D={d}); the "
            "features must be divided by their bandwidths (use larger bandwidths or fewer "
            "feature channels)"
        )


@dataclass(frozen=True)
class KeyLayout:
    """Mixed-radix layout of vertex keys.

    ``low[i]`` is subtracted from coordinate i of q; ``strides[i]`` is its place value; ``cells``
    is the number of q values per batch element. Margins of 2 below and 1 above the range of the
    points' nearest remainder-0 points leave room for simplex vertices and their neighbours,
    ``margin`` more on each side for the rings of a :class:`Refinement` (each lattice step moves
    a coordinate of q by one at most).
    """

    low: tuple[int, ...]
    strides: tuple[int, ...]
    cells: int

    @classmethod
    def from_range(
        cls,
        nearest_min: list[int],
        nearest_max: list[int],
        batch_size: int,
        extra: int,
        margin: int = 0,
    ) -> KeyLayout:
        """Layout for q in ``[min - 2 - margin, max + 1 + margin]`` per coordinate; ``extra``
        more values per key (remainders, or permutations) must fit in int64 beside it."""
        d = len(nearest_min)
        low = tuple(int(m) - 2 - margin for m in nearest_min)
        ranges = [int(hi) + 2 + margin - lo for hi, lo in zip(nearest_max, low, strict=True)]
        cells = math.prod(ranges)
        check_key_range(cells, extra * batch_size, d)
        strides = tuple(math.prod(ranges[:i]) for i in range(d))
        return cls(low=low, strides=strides, cells=cells)

    def neighbor_offsets(self, d: int) -> tuple[int, list[int]]:
        """Key differences to the neighbour along each lattice direction j.

        The neighbour of a vertex along direction j has coordinates ``x + (d+1) e_j - 1``:
        remainder k >= 1 gives ``q + e_j`` with remainder k - 1 (key ``+ (d+1) stride_j - 1``);
        remainder 0 gives ``q - 1 + e_j`` with remainder d (key ``+ (d+1)(stride_j - sum of
        strides) + d``). Returns (extra offset for remainder-0 vertices, offsets per direction).
        """
        zero_extra = d + 1 - sum(self.strides) * (d + 1)
        along = [s * (d + 1) - 1 for s in self.strides] + [-1]
        return zero_extra, along
