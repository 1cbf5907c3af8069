"""The numba backend's own machinery: key bounds, work split across threads, fast exp, blur.

Its operator is compared with the PyTorch reference in ``test_lattice.py``; these tests pin the
pieces that the reference does not have.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakseg.filtering.lattice import numba_available

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")

if numba_available():
    from weakseg.filtering import _lattice_numba as numba_backend


def _points(batch: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch * n, d, generator=generator) * 3


def _filter(ops: numba_backend.NumbaLatticeOps, values: torch.Tensor) -> torch.Tensor:
    return ops.apply(values, torch.ones(values.shape[0]))


def test_key_bounds_from_feature_range_match_a_pass_over_the_points() -> None:
    # The feature box gives looser key bounds than the pass over the points; the lattice (its
    # vertices, weights and neighbours) must not depend on which one was used.
    batch, n, d = 2, 400, 4
    points = _points(batch, n, d)
    box = (points.amin(dim=0), points.amax(dim=0))
    values = torch.rand(batch, 3, n, generator=torch.Generator().manual_seed(1))
    from_box = numba_backend.NumbaLatticeOps(points, batch, n, box)
    from_pass = numba_backend.NumbaLatticeOps(points, batch, n)
    assert from_box.num_vertices == from_pass.num_vertices
    torch.testing.assert_close(_filter(from_box, values), _filter(from_pass, values))


def test_too_loose_feature_range_falls_back_to_the_points() -> None:
    batch, n, d = 1, 300, 8
    points = _points(batch, n, d)
    huge = torch.full((d,), 1e15)
    elevation = numba_backend.elevation_matrix(d, torch.float32).numpy()
    assert numba_backend._layout_from_feature_range((-huge, huge), elevation) is None
    ops = numba_backend.NumbaLatticeOps(points, batch, n, (-huge, huge))
    reference = numba_backend.NumbaLatticeOps(points, batch, n)
    assert ops.num_vertices == reference.num_vertices


@pytest.mark.parametrize("batch", [1, 3])
def test_split_across_threads_gives_the_same_operator(batch: int) -> None:
    # With fewer batch elements than threads, each element is hashed in parts, in parallel, and
    # the parts' vertices are merged: same vertices, same result as one part per element.
    n, d = 900, 5
    points = _points(batch, n, d, seed=batch)
    values = torch.rand(batch, 4, n, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = numba_backend.NumbaLatticeOps(points, batch, n)
        expected = _filter(single, values)
        torch.set_num_threads(2)
        split = numba_backend.NumbaLatticeOps(points, batch, n)
        got = _filter(split, values)
    finally:
        torch.set_num_threads(threads)
    if split._threads < 2:
        pytest.skip("numba has a single thread here")
    assert split.num_vertices == single.num_vertices
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fast_exp_is_accurate_over_the_calibration_range() -> None:
    for sq in np.linspace(0.0, 40.0, 4001):
        exact = math.exp(-0.5 * sq)
        assert abs(numba_backend._exp_minus_half(sq) - exact) <= 1e-12 * exact


def test_parallel_blur_equals_serial_blur() -> None:
    # Small lattices blur serially, large ones in parallel chunks: both must be the same passes.
    batch, n, d = 1, 5000, 3
    ops = numba_backend.NumbaLatticeOps(_points(batch, n, d), batch, n)
    lattice = np.random.default_rng(0).random((ops.num_vertices + 1, 7)).astype(np.float32)
    lattice[-1] = 0.0  # the row of absent vertices
    order = np.array(ops._plan.directions, np.int64)
    args = (ops._forward, ops._backward, order, np.float32(0.75), np.float32(0.125))
    scratch = np.empty_like(lattice)
    serial = numba_backend._blur_serial(lattice.copy(), scratch, *args)  # in place
    parallel = numba_backend._blur_parallel(lattice.copy(), scratch, *args)
    assert ops.num_vertices > numba_backend._CHUNK  # several chunks
    np.testing.assert_array_equal(parallel, serial)
    # An odd number of passes ends in the scratch array; the result must still be in place.
    forward, backward, order = args[:3]
    three = numba_backend._blur_parallel(
        lattice.copy(), scratch, forward, backward, order[:3], *args[3:]
    )
    two = numba_backend._blur_serial(
        lattice.copy(), scratch, forward, backward, order[:2], *args[3:]
    )
    one_more = numba_backend._blur_serial(two, scratch, forward, backward, order[2:3], *args[3:])
    np.testing.assert_array_equal(three, one_more)


def test_blur_by_groups_of_channels_equals_blur_of_all(monkeypatch) -> None:
    # Large lattices are blurred 8 channels at a time: the same passes, entry by entry.
    batch, n, d = 1, 3000, 3
    ops = numba_backend.NumbaLatticeOps(_points(batch, n, d), batch, n)
    lattice = np.random.default_rng(0).random((ops.num_vertices + 1, 21)).astype(np.float32)
    lattice[-1] = 0.0
    order = np.array(ops._plan.directions, np.int64)
    args = (ops._forward, ops._backward, order, np.float32(0.75), np.float32(0.125))
    whole = numba_backend._blur_serial(lattice.copy(), np.empty_like(lattice), *args)
    monkeypatch.setattr(numba_backend, "_GROUPED_BLUR_BYTES", 0)
    grouped = numba_backend._blur(lattice.copy(), *args)
    np.testing.assert_array_equal(grouped, whole)


def test_loading_the_backend_keeps_pytorchs_thread_count() -> None:
    # Starting numba's OpenMP threads resets the OpenMP thread count that PyTorch reads. The
    # threads start once per process, at import: check in a fresh interpreter.
    import subprocess
    import sys

    script = (
        "import torch; torch.set_num_threads(1); "
        "import weakseg.filtering._lattice_numba; print(torch.get_num_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.split() == ["1"]


def _filter_in_child(queue, backend: str) -> None:  # runs in a forked process
    from weakseg.filtering import PermutohedralLattice

    torch.set_num_threads(1)  # as in a DataLoader worker: PyTorch's own OpenMP is not fork-safe

    features = torch.arange(40.0).reshape(1, 2, 20) / 7
    try:
        lattice = PermutohedralLattice(features, backend=backend)
        queue.put((lattice.backend, lattice(torch.ones(1, 1, 20)).tolist()))
    except RuntimeError as error:
        queue.put(("error", str(error)))


@pytest.mark.skipif(
    not numba_available() or numba_backend.numba.threading_layer() != "omp",
    reason="only the OpenMP threading layer is unsafe after fork",
)
def test_forked_child_falls_back_to_the_torch_backend() -> None:
    # GNU OpenMP terminates a forked child that uses it after the parent did (a DataLoader
    # worker): there "auto" must pick the PyTorch backend and "numba" must say why it cannot run.
    import multiprocessing

    from weakseg.filtering import PermutohedralLattice

    features = torch.arange(40.0).reshape(1, 2, 20) / 7
    expected = PermutohedralLattice(features, backend="numba")(torch.ones(1, 1, 20))
    context = multiprocessing.get_context("fork")
    results = []
    for backend in ("auto", "numba"):
        queue = context.Queue()
        child = context.Process(target=_filter_in_child, args=(queue, backend))
        child.start()
        results.append(queue.get(timeout=60))
        child.join(timeout=60)
        assert child.exitcode == 0
    (auto_backend, auto_out), (status, message) = results
    assert auto_backend == "torch"
    torch.testing.assert_close(torch.tensor(auto_out), expected, rtol=1e-5, atol=1e-6)
    assert status == "error" and "forked" in message


def test_lattices_reusing_pooled_arrays_filter_as_fresh_ones() -> None:
    # A dropped lattice's arrays serve the next build of the same size; live lattices never
    # share them, and the results match a lattice built from fresh arrays.
    import gc

    from weakseg.filtering import PermutohedralLattice

    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 2, 256, 256, generator=generator) * 2 for _ in range(3)]
    values = torch.rand(2, 3, 256, 256, generator=generator)
    first = PermutohedralLattice(features[0], backend="numba")
    first_weights = first._ops._bary  # 1.5 MB: large enough to be kept
    expected = [PermutohedralLattice(f, backend="torch")(values) for f in features[1:]]
    del first
    gc.collect()
    second = PermutohedralLattice(features[1], backend="numba")
    third = PermutohedralLattice(features[2], backend="numba")
    assert second._ops._bary is first_weights
    assert not np.shares_memory(second._ops._bary, third._ops._bary)
    assert not np.shares_memory(second._ops._vertex_of_entry, third._ops._vertex_of_entry)
    for lattice, reference in zip((second, third), expected, strict=True):
        torch.testing.assert_close(lattice(values), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_rings_grow_the_tables_when_the_guess_is_short(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Accuracy levels add rings of vertices; their tables are sized from a guess and grow
    # (number and dilate again) when it is short: the lattice must not depend on it.
    from weakseg.filtering._lattice_geometry import ACCURACY_LEVELS

    n, d = 400, 4
    points = _points(batch, n, d, seed=5)
    values = torch.rand(batch, 2, n, generator=torch.Generator().manual_seed(3))
    refined = ACCURACY_LEVELS[2]
    expected = numba_backend.NumbaLatticeOps(points, batch, n, refinement=refined)
    monkeypatch.setattr(numba_backend, "_guess_dilated", lambda count, d, rings: count)
    grown = numba_backend.NumbaLatticeOps(points, batch, n, refinement=refined)
    assert grown.num_vertices == expected.num_vertices > 10 * n * batch
    torch.testing.assert_close(_filter(grown, values), _filter(expected, values))
