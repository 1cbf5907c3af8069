"""The numba lattice backend: the same operator as the PyTorch one, in JIT-compiled CPU loops.

Optional (``pip install weakseg[fast]``): kernels are compiled on first use and cached, so users
never need a compiler. Construction is one pass over the points: blocks of 64 points are elevated
and rounded to their simplices with loops that run across the block's points (so they vectorize,
3x faster than point by point), then each point's d + 1 vertex keys are hashed in an
open-addressing table. The points of every batch element are cut into parts when there are fewer
elements than threads, each part with its own table, and the parts' vertices are merged into one
compact table per element, which also serves the neighbour lookups. Key bounds come from the
features' bounding box (no pass over the points). Splat accumulates into one buffer per thread,
blur and slice run in parallel over vertices and points; small lattices blur serially, because
starting a parallel region costs more than a pass. Values stay channel-major ``[B, C, N]``
throughout. Large work arrays are reused from lattice to lattice (``_work_pool.WORK_POOL``).
Tested equal to :mod:`weakseg.filtering._lattice_torch` up to floating-point rounding.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

from weakseg.filtering._lattice_geometry import (
    ACCURACY_LEVELS,
    NEGLIGIBLE_SQ_DISTANCE,
    BlurPlan,
    KeyLayout,
    Refinement,
    elevation_array,
    elevation_matrix,  # noqa: F401 - used by tests through this module
)
from weakseg.filtering._work_pool import WORK_POOL

if TYPE_CHECKING:  # torch is imported lazily: the array lattice (NumbaLattice) runs without it
    import torch
    from torch import Tensor

# Threading layer: OpenMP first. Its threads wait for work by spinning briefly, as PyTorch's do,
# so a parallel region starts in microseconds instead of the ~0.1 ms of numba's own work queue,
# and the two kinds of threads hand the cores back and forth without sleeping. Measured on 2
# cores against the work queue with PyTorch's threads waiting passively: filtering 1.0-1.5x
# faster, and a U-Net training step 1.4x faster, since PyTorch keeps its default waiting.
# A layer chosen by the user (NUMBA_THREADING_LAYER) wins; where OpenMP cannot load, the work
# queue serves.
if os.environ.get("NUMBA_THREADING_LAYER") is None:
    numba.config.THREADING_LAYER = "default"
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


def _launch_threads() -> int:
    """Start numba's threads now and return the process id that started them.

    Starting the OpenMP layer resets the OpenMP thread count that PyTorch reads; PyTorch's
    setting is put back. GNU OpenMP cannot be used again in a process forked after it started
    (numba terminates such a child): :func:`usable_in_this_process` tells.
    """
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    numba.get_num_threads()  # launches the threading layer
    if torch is not None:
        torch.set_num_threads(torch_threads)
    return os.getpid()


_LAUNCHED_IN = _launch_threads()


def usable_in_this_process() -> bool:
    """False in a process forked after this module started OpenMP threads (a data-loader
    worker, say): numba's OpenMP layer would terminate it. The PyTorch backend serves there."""
    return numba.threading_layer() != "omp" or os.getpid() == _LAUNCHED_IN


_CHUNK = 2048  # points per parallel work item
_BLOCK = 64  # points transposed at once between channel-major and point-major
_EMPTY = -1  # empty slot of the hash table (keys are >= 0)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


@njit(cache=True)
def _elevate_block(features, b, start, count, elevation, coords, elevated):  # pragma: no cover
    """``elevated [d+1, BLOCK] = E coords`` for points ``start .. start+count`` of batch element
    ``b`` of channel-major ``features [B, d, N]`` (read along N, so the copy into the block
    vectorizes, and every loop below runs over the block's points)."""
    d1, d = elevation.shape
    zero = features.dtype.type(0)
    for j in range(d):
        source = features[b, j]
        for i in range(count):
            coords[j, i] = source[start + i]
        for i in range(count, _BLOCK):  # a partial last block: pad with the first point
            coords[j, i] = coords[j, 0]
    for c in range(d1):
        row = elevated[c]
        for i in range(_BLOCK):
            row[i] = zero
        for j in range(d):
            e = elevation[c, j]
            for i in range(_BLOCK):
                row[i] += e * coords[j, i]


@njit(cache=True)
def _simplex_block(elevated, near, rank, bary_t):  # pragma: no cover - compiled
    """Enclosing simplex of a block of elevated points (Adams et al.), vectorized over points.

    Fills ``near [d+1, BLOCK]`` (nearest remainder-0 point / (d+1), as floats), ``rank`` (of each
    coordinate's offset, 0..d) and ``bary_t [d+2, BLOCK]`` (weight of the vertex of remainder k
    in row k; row d+1 is scratch).
    """
    d1 = elevated.shape[0]
    d = d1 - 1
    dtype = elevated.dtype
    fd1 = dtype.type(d1)
    inv = dtype.type(1.0) / fd1
    one, zero = dtype.type(1.0), dtype.type(0.0)
    offset = np.empty_like(elevated)
    total = np.zeros(_BLOCK, dtype)
    for c in range(d1):
        for i in range(_BLOCK):
            x = elevated[c, i]
            down = np.floor(x * inv)
            up = down + one
            n = up if up * fd1 - x < x - down * fd1 else down  # the nearer multiple of d+1
            near[c, i] = n
            total[i] += n
            offset[c, i] = x - n * fd1
            rank[c, i] = 0
    for a in range(d1):
        for b in range(a + 1, d1):
            for i in range(_BLOCK):
                smaller = np.int32(1) if offset[a, i] < offset[b, i] else np.int32(0)
                rank[a, i] += smaller
                rank[b, i] += 1 - smaller
    # The rounded point need not lie on sum(x) = 0: move the coordinates of extreme rank.
    for c in range(d1):
        for i in range(_BLOCK):
            r = rank[c, i] + np.int32(total[i])
            below, above = r < 0, r > d
            near[c, i] += one if below else (-one if above else zero)
            rank[c, i] = r + (d1 if below else (-d1 if above else 0))
            offset[c, i] = (elevated[c, i] - near[c, i] * fd1) * inv
    for k in range(d1 + 1):
        row = bary_t[k]
        for i in range(_BLOCK):
            row[i] = zero
        for c in range(d1):
            for i in range(_BLOCK):
                r, value = rank[c, i], offset[c, i]
                row[i] += (value if r == d - k else zero) - (value if r == d1 - k else zero)
    for i in range(_BLOCK):
        bary_t[0, i] += one + bary_t[d1, i]


@njit(parallel=True, cache=True)
def _nearest_bounds(features, elevation):  # pragma: no cover - compiled
    """Bounds on the remainder-0 coordinates ``nearest`` of every point's simplex, per chunk of
    ``features [B, d, N]``: ``floor(min / (d+1)) - 1`` and ``ceil(max / (d+1)) + 1`` of each
    elevated coordinate (the rounding moves a coordinate by at most one step, the rank fix by
    one more)."""
    batch, d, n = features.shape
    d1 = d + 1
    per_element = (n + _CHUNK - 1) // _CHUNK
    chunks = batch * per_element
    lows = np.empty((chunks, d1), np.int64)
    highs = np.empty((chunks, d1), np.int64)
    for chunk in prange(chunks):
        b, first = chunk // per_element, (chunk % per_element) * _CHUNK
        coords = np.empty((d, _BLOCK), features.dtype)
        elevated = np.empty((d1, _BLOCK), features.dtype)
        low = np.full((d1, _BLOCK), np.inf, features.dtype)
        high = np.full((d1, _BLOCK), -np.inf, features.dtype)
        stop = min(n, first + _CHUNK)
        for start in range(first, stop, _BLOCK):
            _elevate_block(
                features, b, start, min(_BLOCK, stop - start), elevation, coords, elevated
            )
            for c in range(d1):
                for i in range(_BLOCK):
                    low[c, i] = min(low[c, i], elevated[c, i])
                    high[c, i] = max(high[c, i], elevated[c, i])
        for c in range(d1):
            lows[chunk, c] = math.floor(low[c].min() / d1) - 1
            highs[chunk, c] = math.ceil(high[c].max() / d1) + 1
    return lows, highs


@njit(cache=True)
def _slot(key, mask, shift):  # pragma: no cover - compiled
    return np.int64((np.uint64(key) * _HASH_MULTIPLIER) >> np.uint64(shift)) & mask


@njit(cache=True)
def _lookup(table_keys, table_index, key, mask, shift):  # pragma: no cover - compiled
    """Index stored for ``key`` in one open-addressing table, or -1."""
    slot = _slot(key, mask, shift)
    while True:
        stored = table_keys[slot]
        if stored == key:
            return table_index[slot]
        if stored == _EMPTY:
            return -1
        slot = (slot + 1) & mask


@njit(cache=True)
def _find_or_insert(table_keys, table_index, keys, key, count, bits):  # pragma: no cover
    """Index of ``key`` in one open-addressing table (``2^bits`` slots, at most half full),
    inserting it as number ``count`` (appended to ``keys``) if absent; -1 if absent and the
    table is full."""
    capacity = table_keys.shape[0]
    slot = _slot(key, capacity - 1, 64 - bits)
    while True:
        stored = table_keys[slot]
        if stored == key:
            return table_index[slot]
        if stored == _EMPTY:
            if count == capacity // 2:
                return -1
            table_keys[slot] = key
            table_index[slot] = count
            keys[count] = key
            return count
        slot = (slot + 1) & (capacity - 1)


@njit(parallel=True, cache=True)
def _splat_weights_and_vertices(
    features, elevation, low, strides, parts, tables, capacity_bits, bary, local
):  # pragma: no cover - compiled
    """Enclosing simplex, barycentric weights and vertex names of every point, in one pass.

    The points of each batch element of ``features [B, d, N]`` are cut into ``parts``
    contiguous ranges (tasks), hashed in parallel, one open-addressing table per task. For each
    point: the nearest remainder-0 point and the rank of each coordinate (Adams et al.), the
    weights ``bary [P, d+1]`` (P = B N), then vertex k's
    key ``(cell key of q) (d+1) + k`` with ``q = nearest - [rank > d-k]`` over the first d
    coordinates, built incrementally (vertex k drops the coordinate of rank d+1-k) and looked up
    or inserted. Fills the weights ``bary [P, d+1]``, the task-local vertex index of every entry
    ``p (d+1) + k`` in ``local [P (d+1)]`` and the hash ``tables`` (per task: slot keys, empty
    at -1; slot indices; keys in order of first appearance); returns the vertex count per task,
    -1 where a table filled up.
    """
    batch, d, n = features.shape
    d1 = d + 1
    table_keys, table_index, vertex_keys = tables
    tasks = batch * parts
    part_size = (n + parts - 1) // parts
    counts = np.zeros(tasks, np.int64)
    for task in prange(tasks):
        b, part = task // parts, task % parts
        first = part * part_size
        last = min(n, first + part_size)
        coords = np.empty((d, _BLOCK), features.dtype)
        elevated = np.empty((d1, _BLOCK), features.dtype)
        near = np.empty((d1, _BLOCK), features.dtype)
        rank = np.empty((d1, _BLOCK), np.int32)
        bary_t = np.empty((d1 + 1, _BLOCK), features.dtype)
        stride_of_rank = np.zeros(d1, np.int64)
        previous = np.full(d1, _EMPTY, np.int64)  # keys of the previous point's vertices
        previous_index = np.zeros(d1, np.int32)
        count = 0
        full = False
        for start in range(first, last, _BLOCK):
            size = min(_BLOCK, last - start)
            _elevate_block(features, b, start, size, elevation, coords, elevated)
            _simplex_block(elevated, near, rank, bary_t)
            for i in range(size):
                p = b * n + start + i
                key = 0
                for c in range(d):
                    key += (np.int64(near[c, i]) - low[c]) * strides[c]
                    stride_of_rank[rank[c, i]] = strides[c]
                stride_of_rank[rank[d, i]] = 0  # the last coordinate is implied by sum = 0
                for k in range(d1):
                    bary[p, k] = bary_t[k, i]
                    if k > 0:
                        key -= stride_of_rank[d1 - k]
                    full_key = key * d1 + k
                    # Neighbouring pixels mostly share their simplex: skip the probe then.
                    if full_key == previous[k]:
                        local[p * d1 + k] = previous_index[k]
                        continue
                    index = _find_or_insert(
                        table_keys[task],
                        table_index[task],
                        vertex_keys[task],
                        full_key,
                        count,
                        capacity_bits,
                    )
                    if index < 0:
                        full = True
                        break
                    if index == count:
                        count += 1
                    local[p * d1 + k] = index
                    previous[k] = full_key
                    previous_index[k] = index
                if full:
                    break
            if full:
                break
        counts[task] = -1 if full else count
    return counts


def _number_vertices_py(counts, vertex_keys, parts, compact_bits):  # pragma: no cover
    """Number the vertices of each batch element (in parallel over elements) and index them in
    one compact table per element (at most half full, small enough to stay in cache for the
    neighbour lookups). A vertex found by several parts of an element is numbered once.

    Returns ``remap [tasks, max count]`` (task-local index -> number within its element), the
    tables (slot keys, slot numbers), the keys in order of number ``[batch, max unique]`` and
    the vertex count per element.
    """
    tasks = counts.shape[0]
    batch = tasks // parts
    capacity = 1 << compact_bits
    remap = np.empty((tasks, max(1, counts.max())), np.int32)
    table_keys = np.full((batch, capacity), _EMPTY, np.int64)
    table_index = np.empty((batch, capacity), np.int32)
    keys = np.empty((batch, capacity // 2), np.int64)
    unique = np.zeros(batch, np.int64)
    for b in prange(batch):
        count = 0
        for task in range(b * parts, (b + 1) * parts):
            for m in range(counts[task]):
                key = vertex_keys[task, m]
                # Never full: the table has room for all the parts' vertices.
                number = _find_or_insert(
                    table_keys[b], table_index[b], keys[b], key, count, compact_bits
                )
                if number == count:
                    count += 1
                remap[task, m] = number
        unique[b] = count
    return remap, table_keys, table_index, keys, unique


# Every parallel region ends at a barrier that waits for all threads: where the cores are busy
# with other work (DataLoader workers, other processes), one descheduled thread stalls the
# region for a scheduler time slice (measured: 0.1 ms of work taking 30 ms on 2 loaded cores).
# Small steps therefore run on the calling thread: each kernel below that has a serial twin
# (the same loops compiled without ``parallel``) uses it under these sizes.
_number_vertices = njit(parallel=True, cache=True)(_number_vertices_py)
_number_vertices_serial = njit(cache=True)(_number_vertices_py)
_SERIAL_ENTRIES = 1 << 21  # vertex indices (points x (d+1)) renumbered on one thread
_SERIAL_VERTICES = 1 << 15  # lattice vertices whose neighbours are looked up on one thread


def _globalize_py(local, remap, offsets, points_per_batch, parts):  # pragma: no cover
    """Turn the task-local vertex index of every entry into its global number (its number within
    its batch element plus the element's offset), in place."""
    tasks = remap.shape[0]
    d1 = local.shape[0] // (tasks // parts * points_per_batch)
    part_size = (points_per_batch + parts - 1) // parts
    for task in prange(tasks):
        b, part = task // parts, task % parts
        start = b * points_per_batch + part * part_size
        stop = min((b + 1) * points_per_batch, start + part_size)
        offset = np.int32(offsets[b])
        if parts == 1:  # one task per element: numbers are the task-local indices (vectorizes)
            for e in range(start * d1, stop * d1):
                local[e] += offset
        else:
            numbers = remap[task]
            for e in range(start * d1, stop * d1):
                local[e] = numbers[local[e]] + offset


_globalize = njit(parallel=True, cache=True)(_globalize_py)
_globalize_serial = njit(cache=True)(_globalize_py)


def _dilate_py(table_keys, table_index, keys, unique, rings, zero_extra, along):
    # pragma: no cover - compiled
    """Add ``rings`` layers of vertices without points around each batch element's vertices:
    the neighbours of every vertex along each lattice direction, both ways, numbered after
    the vertices before them (in place: tables, keys, counts). Returns, per element, whether
    it fitted (its table stays at most half full); the caller grows the tables where not."""
    d1 = along.shape[0]
    batch = unique.shape[0]
    capacity = table_keys.shape[1]
    bits = np.int64(0)
    while (1 << bits) < capacity:
        bits += 1
    fitted = np.ones(batch, np.bool_)
    for b in prange(batch):
        count = unique[b]
        start = 0
        for _ in range(rings):
            stop = count
            for v in range(start, stop):
                key = keys[b, v]
                remainder = key % d1
                ahead = key + (zero_extra if remainder == 0 else 0)
                behind = key - (zero_extra if remainder == d1 - 1 else 0)
                for j in range(2 * d1):
                    target = ahead + along[j] if j < d1 else behind - along[j - d1]
                    index = _find_or_insert(
                        table_keys[b], table_index[b], keys[b], target, count, bits
                    )
                    if index < 0:
                        fitted[b] = False
                        break
                    if index == count:
                        count += 1
                if not fitted[b]:
                    break
            if not fitted[b]:
                break
            start = stop
        unique[b] = count
    return fitted


_dilate = njit(parallel=True, cache=True)(_dilate_py)
_dilate_serial = njit(cache=True)(_dilate_py)


def _neighbors_py(keys, unique, offsets, table_keys, table_index, zero_extra, along):
    # pragma: no cover - compiled
    """Global number of each vertex's neighbour along each lattice direction, both ways
    ([d+1, M+1], M for an absent vertex and for the all-zero row M). One parallel loop over
    all vertices of all batch elements."""
    d1 = along.shape[0]
    num_vertices = offsets[-1] + unique[-1]
    capacity_bits = np.int64(0)
    while (1 << capacity_bits) < table_keys.shape[1]:
        capacity_bits += 1
    mask, shift = table_keys.shape[1] - 1, 64 - capacity_bits
    forward = np.full((d1, num_vertices + 1), num_vertices, np.int32)
    backward = np.full((d1, num_vertices + 1), num_vertices, np.int32)
    element = np.empty(num_vertices, np.int32)  # batch element of each vertex
    for b in range(unique.shape[0]):
        element[offsets[b] : offsets[b] + unique[b]] = b
    for v in prange(num_vertices):
        b = element[v]
        key = keys[b, v - offsets[b]]
        extra = zero_extra if key % d1 == 0 else 0
        for j in range(d1):
            index = _lookup(table_keys[b], table_index[b], key + extra + along[j], mask, shift)
            if index >= 0:
                found = offsets[b] + index
                forward[j, v] = found
                backward[j, found] = v  # one predecessor along j
    return forward, backward


_neighbors = njit(parallel=True, cache=True)(_neighbors_py)
_neighbors_serial = njit(cache=True)(_neighbors_py)


@njit(parallel=True, cache=True)
def _splat(values, vertex_of_entry, bary, point_weight, partial):  # pragma: no cover - compiled
    """Lattice values [M + 1, C] of channel-major ``values [B, C, N]``, each point's values
    times ``point_weight[b N + i]`` (all ones when ``point_weight`` is empty); returned in
    ``partial[0]``.

    Each thread accumulates a range of points into its own buffer ``partial[t]`` (``partial``
    is ``[threads, M + 1, C]``, contents overwritten). Points are read in blocks
    that are transposed on the fly: reading the C channels of one point directly would stride
    by N, and for power-of-two N the C streams collide in the same cache sets (measured 10x
    slower at 512 x 512).
    """
    batch, channels, n = values.shape
    num_threads = partial.shape[0]
    d1 = bary.shape[1]
    weighted = point_weight.shape[0] > 0
    blocks_per_image = (n + _BLOCK - 1) // _BLOCK
    tasks = batch * blocks_per_image
    per_thread = (tasks + num_threads - 1) // num_threads
    for t in prange(num_threads):
        partial[t] = 0
        block = np.empty((_BLOCK, channels), values.dtype)
        for task in range(t * per_thread, min(tasks, (t + 1) * per_thread)):
            b, start = task // blocks_per_image, (task % blocks_per_image) * _BLOCK
            stop = min(n, start + _BLOCK)
            for c in range(channels):
                for i in range(start, stop):
                    block[i - start, c] = values[b, c, i]
            for i in range(start, stop):
                p = b * n + i
                scale = point_weight[p] if weighted else values.dtype.type(1)
                for k in range(d1):
                    vertex = vertex_of_entry[p * d1 + k]
                    weight = bary[p, k] * scale
                    for c in range(channels):
                        partial[t, vertex, c] += weight * block[i - start, c]
    lattice = partial[0]
    for t in range(1, num_threads):
        lattice += partial[t]
    return lattice


@njit(cache=True)
def _blur_rows(current, blurred, forward, backward, j, start, stop, center, neighbor):
    # pragma: no cover - compiled
    """Rows ``start .. stop`` of one pass ``[neighbor, center, neighbor]`` along direction j."""
    for m in range(start, stop):
        f, g = forward[j, m], backward[j, m]
        for c in range(current.shape[1]):
            blurred[m, c] = neighbor * (current[f, c] + current[g, c]) + center * current[m, c]


@njit(parallel=True, cache=True)
def _blur_parallel(lattice, scratch, forward, backward, directions, center, neighbor):
    # pragma: no cover - compiled
    """The passes, each in parallel over chunks of rows, alternating between ``lattice`` and
    ``scratch`` (same shape); the result ends in ``lattice``."""
    rows = lattice.shape[0]  # [M + 1, C], the last row (absent vertices) stays zero
    chunks = (rows + _CHUNK - 1) // _CHUNK
    current, blurred = lattice, scratch
    for j in directions:
        for chunk in prange(chunks):
            start = chunk * _CHUNK
            stop = min(rows, start + _CHUNK)
            _blur_rows(current, blurred, forward, backward, j, start, stop, center, neighbor)
        current, blurred = blurred, current
    if directions.shape[0] % 2 == 1:
        lattice[:] = current
    return lattice


@njit(cache=True)
def _blur_serial(lattice, scratch, forward, backward, directions, center, neighbor):
    # pragma: no cover - compiled
    """As :func:`_blur_parallel`, on the calling thread."""
    current, blurred = lattice, scratch
    for j in directions:
        _blur_rows(current, blurred, forward, backward, j, 0, lattice.shape[0], center, neighbor)
        current, blurred = blurred, current
    if directions.shape[0] % 2 == 1:
        lattice[:] = current
    return lattice


# Every pass of the parallel version is a parallel region. Starting one costs ~0.1 ms with
# numba's work-queue threading layer on the 2-core VM (more than a whole pass over a small
# lattice), microseconds with the OpenMP one.
_PARALLEL_BLUR_ENTRIES = 1 << 18  # lattice entries (rows x channels)
# Larger lattices are blurred a group of channels at a time (see _blur).
_GROUPED_BLUR_BYTES = 1 << 22
_BLUR_GROUP = 8  # channels per group


def _blur(lattice, forward, backward, directions, center, neighbor):
    """``B^T B`` (or any sequence of passes) applied to lattice values ``[M + 1, C]`` in place
    (also returned).

    Every pass gathers two neighbour rows per vertex, at random. Above 4 MB of values, the
    channels are blurred in groups of 8 (rows of 32 bytes in float32), whose smaller working
    set stays in cache: measured 1.5-2x faster at 75k vertices x 21 channels (the bilateral
    kernel of a 321 x 321 photo), and 10% slower than one pass over all channels at 42k x 21.
    """
    channels = lattice.shape[1]
    if lattice.nbytes <= _GROUPED_BLUR_BYTES or channels <= _BLUR_GROUP:
        return _blur_in_place(lattice, forward, backward, directions, center, neighbor)
    for first in range(0, channels, _BLUR_GROUP):
        columns = slice(first, min(channels, first + _BLUR_GROUP))
        group = WORK_POOL.take((lattice.shape[0], columns.stop - first), lattice.dtype)
        group[:] = lattice[:, columns]
        lattice[:, columns] = _blur_in_place(group, forward, backward, directions, center, neighbor)
        WORK_POOL.give(group)
    return lattice


def _blur_in_place(lattice, forward, backward, directions, center, neighbor):
    """The passes over contiguous ``lattice`` values, with a scratch array from the pool."""
    blur = _blur_parallel if lattice.size >= _PARALLEL_BLUR_ENTRIES else _blur_serial
    scratch = WORK_POOL.take(lattice.shape, lattice.dtype)
    blur(lattice, scratch, forward, backward, directions, center, neighbor)
    WORK_POOL.give(scratch)
    return lattice


@njit(parallel=True, cache=True)
def _slice(lattice, vertex_of_entry, bary, scale, out, num_threads, point_weight, accumulate):
    # pragma: no cover - compiled
    """Channel-major ``out [B, C, N]`` from lattice values [M + 1, C], times ``scale[b]`` and
    ``point_weight[b N + i]`` (ones when empty), written or, if ``accumulate``, added, in
    transposed blocks (folding the weights in saves passes over, and allocations of, the output)."""
    batch, channels, n = out.shape
    d1 = bary.shape[1]
    weighted = point_weight.shape[0] > 0
    blocks_per_image = (n + _BLOCK - 1) // _BLOCK
    tasks = batch * blocks_per_image
    per_thread = (tasks + num_threads - 1) // num_threads
    for t in prange(num_threads):
        block = np.empty((_BLOCK, channels), lattice.dtype)
        factor = np.empty(_BLOCK, lattice.dtype)
        for task in range(t * per_thread, min(tasks, (t + 1) * per_thread)):
            b, start = task // blocks_per_image, (task % blocks_per_image) * _BLOCK
            stop = min(n, start + _BLOCK)
            for i in range(start, stop):
                p = b * n + i
                factor[i - start] = scale[b] * point_weight[p] if weighted else scale[b]
                for c in range(channels):
                    block[i - start, c] = 0
                for k in range(d1):
                    vertex = vertex_of_entry[p * d1 + k]
                    weight = bary[p, k]
                    for c in range(channels):
                        block[i - start, c] += weight * lattice[vertex, c]
            for c in range(channels):
                if accumulate:
                    for i in range(start, stop):
                        out[b, c, i] += block[i - start, c] * factor[i - start]
                else:
                    for i in range(start, stop):
                        out[b, c, i] = block[i - start, c] * factor[i - start]
    return out


@njit(cache=True, fastmath=True)
def _exp_minus_half(sq):  # pragma: no cover - compiled
    """``exp(-sq / 2)`` for ``0 <= sq <= NEGLIGIBLE_SQ_DISTANCE``, to ~1e-13 relative, in
    arithmetic that vectorizes (unlike a call to ``exp``): ``exp(x / 64) ** 64``, the inner
    exponential by its Taylor series to degree 11 (remainder < 2e-15 on [-0.32, 0])."""
    x = sq * (-1.0 / 128.0)
    y = 1.0 + x * (
        1.0
        + x
        * (
            1.0 / 2.0
            + x
            * (
                1.0 / 6.0
                + x
                * (
                    1.0 / 24.0
                    + x
                    * (
                        1.0 / 120.0
                        + x
                        * (
                            1.0 / 720.0
                            + x
                            * (
                                1.0 / 5040.0
                                + x
                                * (
                                    1.0 / 40320.0
                                    + x
                                    * (
                                        1.0 / 362880.0
                                        + x * (1.0 / 3628800.0 + x * (1.0 / 39916800.0))
                                    )
                                )
                            )
                        )
                    )
                )
            )
        )
    )
    for _ in range(6):
        y = y * y
    return y


@njit(parallel=True, cache=True, fastmath=True)
def _exact_degrees(at, near):  # pragma: no cover
    """``sum_q exp(-|f_p - f_q|^2 / 2)`` over the neighbours ``near [B, d, Q]`` for the samples
    ``at [B, d, S]`` (float64, gathered from the features): [B, S]. Pairs farther than
    ``NEGLIGIBLE_SQ_DISTANCE`` are left out, as in the PyTorch backend. Branch-free, so that
    the loop over q vectorizes (neighbour coordinates feature-major and contiguous: the inner
    loop streams through them)."""
    batch, d, num_samples = at.shape
    num_neighbors = near.shape[2]
    out = np.zeros((batch, num_samples), np.float64)
    for task in prange(batch * num_samples):
        b, s = task // num_samples, task % num_samples
        sq = np.zeros(num_neighbors, np.float64)
        for j in range(d):  # innermost loops over q: they vectorize
            coordinate = at[b, j, s]
            row = near[b, j]
            for q in range(num_neighbors):
                diff = coordinate - row[q]
                sq[q] += diff * diff
        acc = 0.0
        for q in range(num_neighbors):
            inside = 1.0 if sq[q] < NEGLIGIBLE_SQ_DISTANCE else 0.0
            acc += inside * _exp_minus_half(min(sq[q], NEGLIGIBLE_SQ_DISTANCE))
        out[b, s] = acc
    return out


@njit(parallel=True, cache=True)
def _splat_ones(vertex_of_entry, bary, num_vertices, num_threads):  # pragma: no cover - compiled
    """``S 1``: lattice values ``[M + 1, 1]`` of all-one values, each thread summing a range of
    points into its own float64 buffer."""
    num_points, d1 = bary.shape
    partial = np.zeros((num_threads, num_vertices + 1), np.float64)
    per_thread = (num_points + num_threads - 1) // num_threads
    for t in prange(num_threads):
        for p in range(t * per_thread, min(num_points, (t + 1) * per_thread)):
            for k in range(d1):
                partial[t, vertex_of_entry[p * d1 + k]] += bary[p, k]
    lattice = np.empty((num_vertices + 1, 1), bary.dtype)
    for m in range(num_vertices + 1):
        total = 0.0
        for t in range(num_threads):
            total += partial[t, m]
        lattice[m, 0] = total
    return lattice


@njit(cache=True)
def _slice_at(lattice, vertex_of_entry, bary, points):  # pragma: no cover - compiled
    d1 = bary.shape[1]
    out = np.zeros(points.shape[0], np.float64)
    for s in range(points.shape[0]):
        p = points[s]
        for k in range(d1):
            out[s] += bary[p, k] * lattice[vertex_of_entry[p * d1 + k], 0]
    return out


def _layout_from_feature_range(
    feature_range: tuple[np.ndarray, np.ndarray], elevation: np.ndarray, margin: int = 0
) -> KeyLayout | None:
    """Key layout from a box around the features: ``E f`` over the box bounds each elevated
    coordinate (interval arithmetic, in float64), hence ``nearest`` within one step more on each
    side (as :func:`_nearest_bounds`). ``None`` if the box is too loose for int64 keys."""
    d1, d = elevation.shape
    low, high = (np.asarray(bound, dtype=np.float64) for bound in feature_range)
    matrix = elevation.astype(np.float64)
    lowest = np.minimum(matrix * low, matrix * high).sum(axis=1)
    highest = np.maximum(matrix * low, matrix * high).sum(axis=1)
    nearest_min = [math.floor(value / d1) - 2 for value in lowest[:d]]
    nearest_max = [math.ceil(value / d1) + 2 for value in highest[:d]]
    try:
        return KeyLayout.from_range(nearest_min, nearest_max, 1, d1, margin)
    except ValueError:
        return None


def _guess_dilated(count: int, d: int, rings: int) -> int:
    """A guess of the vertex count after ``rings`` rings around ``count`` vertices: measured
    5-8x per ring on photo features (D = 5), 14x at D = 8, far less where points are dense."""
    return count * (d + 3) ** rings


def _channel_major(points: np.ndarray, batch_size: int) -> np.ndarray:
    """``[B, d, N]`` features from channel-major ``[B, d, N]`` (returned as is) or from
    point-major ``points [B N, d]`` (a transposed view)."""
    if points.ndim == 3:
        return points
    return points.reshape(batch_size, -1, points.shape[1]).transpose(0, 2, 1)


class NumbaLattice:
    """The lattice of float32/64 NumPy features, channel-major ``[B, d, N]`` or point-major
    ``points [P, d]`` (P = batch_size x points_per_batch), with ``apply(values [B, C, N]) ->
    [B, C, N]``; torch-free."""

    def __init__(
        self,
        points: np.ndarray,
        batch_size: int,
        points_per_batch: int,
        feature_range: tuple[np.ndarray, np.ndarray] | None = None,
        symmetric: bool = True,
        threads: int | None = None,
        refinement: Refinement = ACCURACY_LEVELS[0],
    ) -> None:
        """``points``: ``[B, d, N]`` (read in place when C-contiguous) or ``[B N, d]`` (copied
        to channel-major). ``feature_range``: per-dimension minimum and maximum of the points
        ([d] each), when the caller has them cheaply (they bound the vertex keys without a pass
        over the points). ``threads``: numba threads (default: PyTorch's count where torch is
        loaded, else numba's). ``refinement``: the lattice scale and rings of an ``accuracy``
        level."""
        features = np.ascontiguousarray(_channel_major(points, batch_size))
        d = features.shape[1]
        self.dims, self.batch_size, self.points_per_batch = d, batch_size, points_per_batch
        self._requested_threads = threads
        self._threads = self._sync_threads()
        num_points = batch_size * points_per_batch
        elevation = elevation_array(d, refinement.scale).astype(features.dtype)
        rings = refinement.rings
        layout = None
        if feature_range is not None:
            layout = _layout_from_feature_range(feature_range, elevation, rings)
        if layout is None:
            lows, highs = _nearest_bounds(features, elevation)
            layout = KeyLayout.from_range(
                lows[:, :d].min(axis=0).tolist(),
                highs[:, :d].max(axis=0).tolist(),
                1,
                d + 1,
                rings,
            )  # one table per task: keys need no batch offset
        low = np.array(layout.low, np.int64)
        strides = np.array(layout.strides, np.int64)
        # Enough tasks to keep every thread busy: each batch element cut into `parts`.
        parts = self._threads // math.gcd(batch_size, self._threads)
        part_size = -(-points_per_batch // parts)
        bits = max(10, math.ceil(math.log2(max(2, part_size))) + 1)
        tasks = batch_size * parts
        self._bary = WORK_POOL.take((num_points, d + 1), features.dtype)
        local = WORK_POOL.take((num_points * (d + 1),), np.int32)
        weakref.finalize(self, WORK_POOL.give, self._bary, local)  # for the next lattice
        while True:
            hashing = (
                WORK_POOL.take((tasks, 1 << bits), np.int64),  # slot keys
                WORK_POOL.take((tasks, 1 << bits), np.int32),  # slot indices
                WORK_POOL.take((tasks, 1 << (bits - 1)), np.int64),  # keys in order of insertion
            )
            hashing[0].fill(_EMPTY)
            counts = _splat_weights_and_vertices(
                features, elevation, low, strides, parts, hashing, bits, self._bary, local
            )
            if counts.min() >= 0:
                break
            WORK_POOL.give(*hashing)
            bits += 1  # a table more than half full: grow and hash again
        # The largest element's vertex count (parts may share vertices: an upper bound), with
        # a guess of what the rings add (the tables grow if it is short).
        most = _guess_dilated(int(counts.reshape(batch_size, parts).sum(axis=1).max()), d, rings)
        compact_bits = max(4, math.ceil(math.log2(max(2, most))) + 1)
        number = _number_vertices if batch_size > 1 else _number_vertices_serial
        zero_extra, along_list = layout.neighbor_offsets(d)
        along = np.array(along_list, np.int64)
        while True:
            remap, table_keys, table_index, keys, unique = number(
                counts, hashing[2], parts, compact_bits
            )
            if not rings:
                break
            dilate = _dilate if batch_size > 1 else _dilate_serial
            if dilate(table_keys, table_index, keys, unique, rings, zero_extra, along).all():
                break
            compact_bits += 1  # a table more than half full: number and dilate again
        WORK_POOL.give(*hashing)
        offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(unique)[:-1]])
        globalize = _globalize if local.shape[0] > _SERIAL_ENTRIES else _globalize_serial
        globalize(local, remap, offsets, points_per_batch, parts)
        self._vertex_of_entry = local
        self.num_vertices = int(unique.sum())
        neighbors = _neighbors if self.num_vertices > _SERIAL_VERTICES else _neighbors_serial
        self._forward, self._backward = neighbors(
            keys, unique, offsets, table_keys, table_index, zero_extra, along
        )
        self._plan = BlurPlan.for_dims(d, symmetric, refinement.scale)

    def _blur(self, lattice: np.ndarray, plan: BlurPlan) -> np.ndarray:
        """The passes of ``plan`` over lattice values ``[M + 1, C]``, in place."""
        return _blur(
            lattice,
            self._forward,
            self._backward,
            np.array(plan.directions, np.int64),
            lattice.dtype.type(plan.center),
            lattice.dtype.type(plan.neighbor),
        )

    def _sync_threads(self) -> int:
        """The numba threads to use: as many as PyTorch uses (``torch.set_num_threads``)
        where torch is loaded, else numba's own count, unless given."""
        threads = self._requested_threads
        if threads is None:
            torch = sys.modules.get("torch")
            threads = (
                torch.get_num_threads() if torch is not None else numba.config.NUMBA_NUM_THREADS
            )
        threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        return threads

    def exact_degrees_array(
        self, points: np.ndarray, samples: np.ndarray, neighbors: np.ndarray
    ) -> np.ndarray:
        """Exact ``sum_q W_pq`` (float64) over q in ``neighbors`` for p in ``samples``: [B, S],
        for the lattice's points, ``[B, d, N]`` or ``[B N, d]``."""
        features = _channel_major(points, self.batch_size)
        at, near = (
            np.ascontiguousarray(features[:, :, index.astype(np.int64)], dtype=np.float64)
            for index in (samples, neighbors)
        )  # (B, d, S), (B, d, Q)
        return _exact_degrees(at, near)

    def lattice_degrees_array(self, samples: np.ndarray) -> np.ndarray:
        """``(S^T B S 1)_p`` for p in ``samples`` of every batch element: [B, S]."""
        lattice = _splat_ones(self._vertex_of_entry, self._bary, self.num_vertices, self._threads)
        lattice = self._blur(lattice, self._plan)
        offsets = np.arange(self.batch_size)[:, None] * self.points_per_batch
        points = (offsets + samples.astype(np.int64)[None, :]).reshape(-1)
        out = _slice_at(lattice, self._vertex_of_entry, self._bary, points)
        return out.astype(self._bary.dtype).reshape(self.batch_size, -1)

    def apply_array(
        self,
        values: np.ndarray,
        scale: np.ndarray,
        in_weight: np.ndarray | None = None,
        out_weight: np.ndarray | None = None,
        out: np.ndarray | None = None,
        accumulate: bool = False,
        transpose: bool = False,
    ) -> np.ndarray:
        """``diag(out_weight) scale[b] S^T B S diag(in_weight) v`` for ``values [B, C, N]``
        in the compute dtype (``B^T`` for ``B`` if ``transpose``), the point weights ``[B, N]``
        (``None``: ones) folded into the splat and the slice. Written into ``out`` (contiguous
        ``[B, C, N]``) when given, or added to it if ``accumulate``; else into a new array
        (from the pool: see :meth:`WorkPool.output`)."""
        self._threads = self._sync_threads()
        array = np.ascontiguousarray(values)
        dtype = array.dtype
        partial = WORK_POOL.take((self._threads, self.num_vertices + 1, array.shape[1]), dtype)
        lattice = _splat(
            array, self._vertex_of_entry, self._bary, _weights_array(in_weight, dtype), partial
        )
        lattice = self._blur(lattice, self._plan.transposed() if transpose else self._plan)
        if out is None:
            out, accumulate = WORK_POOL.output(array.shape, dtype), False
        elif out.shape != array.shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a contiguous {dtype} array of shape {array.shape}, "
                f"got {out.dtype} {out.shape}"
            )
        _slice(
            lattice,
            self._vertex_of_entry,
            self._bary,
            np.asarray(scale, dtype=dtype),
            out,
            self._threads,
            _weights_array(out_weight, dtype),
            accumulate,
        )
        WORK_POOL.give(partial)
        return out


class NumbaLatticeOps(NumbaLattice):
    """:class:`NumbaLattice` for CPU tensors (features ``[B, d, N]`` or points ``[P, d]``):
    the interface of the PyTorch backend's ops."""

    def __init__(
        self,
        points: Tensor,
        batch_size: int,
        points_per_batch: int,
        feature_range: tuple[Tensor, Tensor] | None = None,
        symmetric: bool = True,
        refinement: Refinement = ACCURACY_LEVELS[0],
    ) -> None:
        box = None
        if feature_range is not None:
            box = tuple(bound.detach().double().cpu().numpy() for bound in feature_range)
        super().__init__(
            points.detach().contiguous().numpy(),
            batch_size,
            points_per_batch,
            box,
            symmetric,
            refinement=refinement,
        )

    def exact_degrees(self, points: Tensor, samples: Tensor, neighbors: Tensor) -> Tensor:
        """Exact ``sum_q W_pq`` over q in ``neighbors`` for p in ``samples``: [B, S]."""
        import torch

        out = self.exact_degrees_array(points.numpy(), samples.numpy(), neighbors.numpy())
        return torch.from_numpy(out).to(points.dtype)

    def lattice_degrees(self, samples: Tensor) -> Tensor:
        """``(S^T B S 1)_p`` for p in ``samples`` of every batch element: [B, S]."""
        import torch

        return torch.from_numpy(self.lattice_degrees_array(samples.numpy()))

    def apply(
        self,
        values: Tensor,
        scale: Tensor,
        in_weight: Tensor | None = None,
        out_weight: Tensor | None = None,
        out: Tensor | None = None,
        accumulate: bool = False,
        transpose: bool = False,
    ) -> Tensor:
        """:meth:`NumbaLattice.apply_array` on CPU tensors (``out``: a contiguous tensor of
        the values' shape and dtype)."""
        import torch

        if out is not None and (
            out.shape != values.shape or out.dtype != values.dtype or not out.is_contiguous()
        ):
            raise ValueError(
                f"out must be a contiguous {values.dtype} tensor of shape {tuple(values.shape)}, "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        result = self.apply_array(
            values.detach().contiguous().numpy(),
            scale.to(values.dtype).numpy(),
            _tensor_weights(in_weight, values.dtype),
            _tensor_weights(out_weight, values.dtype),
            None if out is None else out.numpy(),
            accumulate,
            transpose,
        )
        return torch.from_numpy(result) if out is None else out


def _tensor_weights(weight: Tensor | None, dtype: torch.dtype) -> np.ndarray | None:
    return None if weight is None else weight.detach().to(dtype).contiguous().numpy()


def _weights_array(weight: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """Per-point weights ``[B, N]`` as the flat array the kernels take (empty for none)."""
    if weight is None:
        return np.empty(0, dtype)
    return np.ascontiguousarray(weight, dtype=dtype).reshape(-1)
