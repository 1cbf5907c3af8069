"""Large work arrays kept for the next lattice of the same size, for both backends.

A first write to freshly allocated memory page-faults, and the C allocator hands large blocks
back to the system as soon as they are freed (above 32 MB at once; smaller ones when the top of
the heap is trimmed). Measured: building a numba lattice for 4 images of 321 x 321 spent about
half its time faulting in its ~20 MB of weights, vertex indices and hash tables (95-118 ms
against 45 ms with the memory kept); writing the 88 MB point-major array of the PyTorch
lattice at 4 x 512 x 512 with 21 channels took 58 ms afresh against 16 ms into a kept one, and
each fresh [d+1, 2^18] temporary of its build cost more than its arithmetic. Training and
inference build lattices of one size batch after batch, so work arrays, and the arrays of
dropped lattices, are kept here for the next request of the same shape and dtype.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the numba backend runs without torch (ArrayLattice)
    import torch
    from torch import Tensor

__all__ = ["WORK_POOL", "WorkPool"]


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype


class WorkPool:
    """Arrays kept for a later request of the same shape and dtype, up to ``max_bytes`` (the
    oldest go first); arrays under ``min_bytes`` are not worth keeping. Their contents are
    stale: every user overwrites them. Thread-safe (a lattice may be garbage-collected on any
    thread). The ``*_tensor`` methods hand out and take back CPU tensors on the same memory.
    """

    def __init__(self, max_bytes: int, min_bytes: int = 1 << 20) -> None:
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A kept array of this shape and dtype, or a new one; uninitialized either way. Of
        several, the one given last (the likeliest still in the cache)."""
        dtype = np.dtype(dtype)
        with self._lock:
            for i in reversed(range(len(self._arrays))):
                array = self._arrays[i]
                if array.shape == shape and array.dtype == dtype:
                    return self._arrays.pop(i)
        return np.empty(shape, dtype)

    def give(self, *arrays: np.ndarray) -> None:
        """Keep ``arrays`` (which their giver must no longer use) for a later :meth:`take`."""
        with self._lock:
            self._arrays.extend(a for a in arrays if a.nbytes >= self.min_bytes)
            while sum(a.nbytes for a in self._arrays) > self.max_bytes:
                self._arrays.pop(0)

    def output(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array (uninitialized) on a kept one, which returns to the pool once this array,
        its views and any tensor made from it (``torch.from_numpy``) are gone.

        For the results that a caller keeps: filter outputs (``[B, C, N]``, 35 MB for 4 images
        of 321 x 321 with 21 classes; writing a fresh one page-faulted for a third of a
        filtering's time) and the arrays a lattice holds while it lives.
        """
        array = self.take(shape, dtype)
        view = array.view()  # views and tensors keep this object alive
        weakref.finalize(view, self.give, array)
        return view

    def take_tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """:meth:`take` as a CPU tensor (on the array's memory)."""
        import torch

        return torch.from_numpy(self.take(shape, _numpy_dtype(dtype)))

    def give_tensors(self, *tensors: Tensor) -> None:
        """:meth:`give` for CPU tensors that :meth:`take_tensor` handed out, in its shape."""
        self.give(*(tensor.numpy() for tensor in tensors))

    def output_tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """:meth:`output` as a CPU tensor: the memory returns to the pool once no tensor
        uses it any more. Like NumPy-backed tensors, it cannot be resized."""
        import torch

        return torch.from_numpy(self.output(shape, _numpy_dtype(dtype)))

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        with self._lock:
            return sum(a.nbytes for a in self._arrays)


# Shared by both backends: 4 x 512 x 512 with 21 channels needs about 230 MB of work arrays.
WORK_POOL = WorkPool(max_bytes=384 << 20)
