"""The Gaussian filtering engine every regularizer rests on.

``W v`` with ``W_pq = exp(-|f_p - f_q|^2 / 2)`` over scaled per-pixel features ``f``:

- :class:`PermutohedralLattice`: O(N (D + C)) approximation, unbiased, exactly linear and symmetric.
- :func:`dense_gaussian_filter`: the exact O(N^2) sum, the reference.
- :func:`preferred_backend`: run ``backend="auto"`` lattices on one backend (numba / PyTorch).
- :class:`ArrayLattice`: the numba lattice on NumPy arrays, without importing torch.
- feature builders that divide positions and intensities by their bandwidths.

Names are imported on first use (PEP 562), so that ``weakseg.filtering.array_lattice`` can be
used without PyTorch being imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ArrayLattice": "weakseg.filtering.array_lattice",
    "BackendFallbackWarning": "weakseg.filtering.lattice",
    "PermutohedralLattice": "weakseg.filtering.lattice",
    "concat_features": "weakseg.filtering.features",
    "dense_gaussian_filter": "weakseg.filtering.exact",
    "intensity_position_features": "weakseg.filtering.features",
    "intensity_xy_features": "weakseg.filtering.features",
    "position_features": "weakseg.filtering.features",
    "preferred_backend": "weakseg.filtering.lattice",
    "rgbxy_features": "weakseg.filtering.features",
    "volume_features": "weakseg.filtering.features",
}

__all__ = [
    "ArrayLattice",
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

if TYPE_CHECKING:
    from weakseg.filtering.array_lattice import ArrayLattice
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
