"""The Gaussian filtering engine every regularizer rests on.

``W v`` with ``W_pq = exp(-|f_p - f_q|^2 / 2)`` over scaled per-pixel features ``f``:

- :class:`PermutohedralLattice`: O(N (D + C)) approximation, unbiased, exactly linear and symmetric.
- :func:`dense_gaussian_filter`: the exact O(N^2) sum, the reference.
- :func:`preferred_backend`: run ``backend="auto"`` lattices on one backend (numba / PyTorch).
- feature builders that divide positions and intensities by their bandwidths.
"""

from weakseg.filtering.exact import dense_gaussian_filter
from weakseg.filtering.features import (
    concat_features,
    intensity_position_features,
    intensity_xy_features,
    position_features,
    rgbxy_features,
    volume_features,
)
from weakseg.filtering.lattice import (
    BackendFallbackWarning,
    PermutohedralLattice,
    preferred_backend,
)

__all__ = [
    "BackendFallbackWarning",
    "PermutohedralLattice",
    "concat_features",
    "dense_gaussian_filter",
    "intensity_position_features",
    "intensity_xy_features",
    "position_features",
    "preferred_backend",
    "rgbxy_features",
    "volume_features",
]
