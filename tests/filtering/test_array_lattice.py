"""ArrayLattice: the numba lattice on NumPy arrays equals PermutohedralLattice(backend="numba"),
and importing it leaves torch unimported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from weakseg.filtering.lattice import numba_available

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")


def _features(batch: int | None, n: int = 900, d: int = 5, dtype=np.float32) -> np.ndarray:
    shape = (d, n) if batch is None else (batch, d, n)
    return (np.random.default_rng(0).normal(size=shape) * 2).astype(dtype)


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("accuracy", [0, 1])
def test_equals_the_numba_backend_of_the_tensor_lattice(batch, dtype, tolerance, accuracy) -> None:
    from weakseg.filtering import ArrayLattice, PermutohedralLattice

    features = _features(batch, dtype=dtype)
    values_shape = (3, 900) if batch is None else (batch, 3, 900)
    values = np.random.default_rng(1).random(values_shape).astype(dtype)
    lattice = ArrayLattice(features, accuracy=accuracy)
    got = lattice.filter(values)
    batched = torch.from_numpy(features if batch else features[None])
    reference = PermutohedralLattice(batched, backend="numba", accuracy=accuracy)
    expected = reference(torch.from_numpy(values if batch else values[None])).numpy()
    expected = expected if batch else expected[0]
    assert got.shape == values.shape and got.dtype == dtype
    assert lattice.num_vertices == reference.num_vertices
    assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()
    out = np.empty_like(values)
    assert lattice.filter(values, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_symmetric_and_one_way() -> None:
    from weakseg.filtering import ArrayLattice

    features = _features(None, dtype=np.float64)
    rng = np.random.default_rng(2)
    u, v = rng.random((2, 900)), rng.random((2, 900))
    lattice = ArrayLattice(features)
    gap = (u * lattice.filter(v)).sum() - (lattice.filter(u) * v).sum()
    assert abs(gap) <= 1e-10 * (u * lattice.filter(v)).sum()
    one_way = ArrayLattice(features, symmetric=False)
    gap = (u * one_way.filter(v)).sum() - (one_way.filter(u) * v).sum()
    assert abs(gap) > 1e-8 * (u * one_way.filter(v)).sum()  # the one-way blur is not


@pytest.mark.parametrize(
    ("features", "values", "error", "message"),
    [
        (np.zeros((5,), np.float32), None, ValueError, r"\[D, N\] or \[B, D, N\]"),
        (np.zeros((5, 10), np.int64), None, TypeError, "float array"),
        (np.full((2, 10), np.nan, np.float32), None, ValueError, "20 non-finite"),
        (np.zeros((2, 10), np.float32), np.zeros((1, 11), np.float32), ValueError, "N=10"),
        (np.zeros((3, 2, 10), np.float32), np.zeros((2, 1, 10), np.float32), ValueError, "B=3"),
    ],
)
def test_bad_input(features, values, error, message) -> None:
    from weakseg.filtering import ArrayLattice

    with pytest.raises(error, match=message):
        ArrayLattice(features).filter(values)


def test_importing_it_does_not_import_torch() -> None:
    script = (
        "import sys, numpy as np; from weakseg.filtering.array_lattice import ArrayLattice; "
        "ArrayLattice(np.ones((2, 50), np.float32)).filter(np.ones((1, 50), np.float32)); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.split() == ["False"]
