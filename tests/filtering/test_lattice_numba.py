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


def _run_filter(ops, values: np.ndarray, groups: int, kernel, transpose: bool = False):
    """The fused filter kernel on ``values [B, C, N]`` with ``groups`` channel groups."""
    plan = ops._plan.transposed() if transpose else ops._plan
    batch, channels, _ = values.shape
    out = np.full(values.shape, np.nan, values.dtype)
    work = np.full(2 * (ops.num_vertices + batch) * channels, np.nan, values.dtype)
    none = np.empty(0, values.dtype)
    kernel(
        values,
        ops._vertex_of_entry,
        ops._bary,
        ops._offsets,
        ops._counts,
        ops._forward,
        ops._backward,
        np.array(plan.directions, np.int64),
        values.dtype.type(plan.center),
        values.dtype.type(plan.neighbor),
        np.ones(batch, values.dtype),
        none,
        none,
        out,
        False,
        groups,
        work,
    )
    return out


@pytest.mark.parametrize("symmetric", [True, False])
def test_filter_tasks_give_the_same_result_however_the_channels_are_grouped(
    symmetric: bool,
) -> None:
    # Each task filters a group of channels of one element (the one-way blur of d = 2 has an
    # odd number of passes): parallel or serial, any grouping, the same numbers entry by entry,
    # and every output entry written (the work arrays start as NaN).
    batch, n, d, channels = 3, 1500, 2, 7
    points = _points(batch, n, d)
    ops = numba_backend.NumbaLatticeOps(points, batch, n, symmetric=symmetric)
    values = np.random.default_rng(0).random((batch, channels, n)).astype(np.float32)
    whole = _run_filter(ops, values, 1, numba_backend._filter_serial)
    assert np.isfinite(whole).all()
    for groups in (2, 3, channels):
        np.testing.assert_array_equal(
            _run_filter(ops, values, groups, numba_backend._filter), whole
        )
    per_channel = [
        _run_filter(ops, values[:, c : c + 1].copy(), 1, numba_backend._filter)
        for c in range(channels)
    ]
    np.testing.assert_array_equal(np.concatenate(per_channel, axis=1), whole)


def test_batch_elements_are_filtered_as_single_images() -> None:
    # Every element has its own vertices (numbered from 0) and neighbour lists: filtering a
    # batch must equal filtering each image alone.
    batch, n, d = 3, 1200, 5
    points = _points(batch, n, d, seed=3)
    values = torch.rand(batch, 5, n, generator=torch.Generator().manual_seed(4))
    together = _filter(numba_backend.NumbaLatticeOps(points, batch, n), values)
    for b in range(batch):
        alone = numba_backend.NumbaLatticeOps(points[b * n : (b + 1) * n], 1, n)
        torch.testing.assert_close(together[b : b + 1], _filter(alone, values[b : b + 1]))


@pytest.mark.parametrize("batch", [1, 2])
def test_hash_tables_sized_from_a_wrong_hint_give_the_same_lattice(monkeypatch, batch) -> None:
    # Tables are sized from the previous lattice's vertex count: a hint far too small fills
    # them (they grow and the points are hashed again), one too large only wastes room.
    n, d = 2000, 5
    points = _points(batch, n, d, seed=5)
    values = torch.rand(batch, 3, n, generator=torch.Generator().manual_seed(6))
    monkeypatch.setattr(numba_backend, "_vertex_fraction_hint", 6.0)
    roomy = numba_backend.NumbaLatticeOps(points, batch, n)
    assert numba_backend._vertex_fraction_hint > 1.0  # ~d+1 vertices per random point
    monkeypatch.setattr(numba_backend, "_vertex_fraction_hint", 1e-6)
    cramped = numba_backend.NumbaLatticeOps(points, batch, n)
    assert cramped.num_vertices == roomy.num_vertices
    torch.testing.assert_close(_filter(cramped, values), _filter(roomy, values))


def test_channel_groups_split_the_tasks_evenly_among_threads() -> None:
    assert numba_backend._channel_groups(21, 1, 2) == 4  # 6, 5, 5, 5 channels
    assert numba_backend._channel_groups(21, 4, 2) == 3  # 12 tasks of 7 channels
    assert numba_backend._channel_groups(1, 1, 2) == 1  # cannot split one channel
    assert numba_backend._channel_groups(3, 1, 4) == 3


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


def test_array_pool_hands_back_kept_arrays_and_respects_its_budget() -> None:
    pool = numba_backend._ArrayPool(max_bytes=3 << 20, min_bytes=1 << 20)
    big = np.ones((1 << 18,), np.float32)  # 1 MB
    pool.give(big, np.ones(10, np.float32))  # the small one is not kept
    assert pool.nbytes == big.nbytes
    assert pool.take(big.shape, np.float64) is not big  # another dtype: a new array
    assert pool.take(big.shape, np.float32) is big
    assert pool.nbytes == 0
    arrays = [np.zeros((1 << 18,), np.float32) for _ in range(4)]
    pool.give(*arrays)
    assert pool.nbytes == 3 << 20  # the oldest went first
    assert all(pool.take(big.shape, np.float32) is a for a in arrays[1:])


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
