"""Start-up of numba in a one-shot command: its first compiled call without SciPy's BLAS.

numba's first call (even of a function loaded from its on-disk cache) imports its NumPy
implementations, and ``numba.np.arraymath`` probes for BLAS by importing
``scipy.linalg.cython_blas``: all of ``scipy.linalg``, about 0.7 s of a 1.5 s first call on
this 2-core machine under load (profiled with cProfile; ``benchmarks/segment.py`` measures the
first-call cost). The kernels of ``weakseg segment`` use no BLAS, so the command imports
``numba.np.arraymath`` with that module hidden: numba then answers ``np.vdot`` / ``np.inner``
with its own loop in this process. Other BLAS-backed functions (``np.dot``, ``np.linalg``)
import SciPy when they are first compiled, as usual.

This changes the process (the probe's answer is kept), so only the command calls it, never
the library.
"""

from __future__ import annotations

import sys

__all__ = ["import_numba_without_blas_probe"]

_PROBED = "scipy.linalg.cython_blas"


def import_numba_without_blas_probe() -> bool:
    """Import ``numba.np.arraymath`` with SciPy's BLAS hidden; True if that happened here
    (False when numba's NumPy layer or SciPy's BLAS was already imported, or numba is absent)."""
    if "numba.np.arraymath" in sys.modules or _PROBED in sys.modules:
        return False
    sys.modules[_PROBED] = None  # type: ignore[assignment]  # makes the import raise ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    except ImportError:
        return False
    finally:
        del sys.modules[_PROBED]
    return True
