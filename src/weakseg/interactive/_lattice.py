"""The Gaussian filter ``v -> W v`` of :mod:`weakseg.filtering` on NumPy arrays, without torch.

Mean field needs no symmetric operator, so the lattice uses the one-way blur
(``symmetric=False``, half the blur passes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from weakseg.filtering.array_lattice import ArrayLattice

__all__ = ["gaussian_filter"]


def gaussian_filter(features: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``values [C, N] -> W values [C, N]`` (float32, a new array) for scaled ``features
    [D, N]``, built once."""
    lattice = ArrayLattice(features, symmetric=False)

    def apply(values: np.ndarray) -> np.ndarray:
        # The lattice's output lives in its work-array pool: copy what mean field keeps.
        return np.array(lattice.filter(np.ascontiguousarray(values, np.float32)))

    return apply
