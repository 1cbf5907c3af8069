"""The numba lattice backend: the same operator as the PyTorch one, in JIT-compiled CPU loops.

Optional (``pip install weakseg[fast]``): kernels are compiled on first use and cached, so users
never need a compiler. Construction hashes vertex keys in an open-addressing table (one pass, no
sort); splat accumulates into one buffer per thread, blur and slice run in parallel over vertices
and points. Values stay channel-major ``[B, C, N]`` throughout, so no transposes are needed.
Tested equal to :mod:`weakseg.filtering._lattice_torch` up to floating-point rounding.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from weakseg.filtering._lattice_geometry import (
    BLUR_CENTER,
    BLUR_NEIGHBOR,
    NEGLIGIBLE_SQ_DISTANCE,
    KeyLayout,
    elevation_matrix,
)

# The OpenMP threading layer busy-waits against PyTorch's own OpenMP threads: measured 50-100x
# slower blur passes on 2 cores. numba's built-in work queue has no such contention. Respect a
# choice made by the user (environment variable) and leave the layer alone once it is running.
if os.environ.get("NUMBA_THREADING_LAYER") is None:
    numba.config.THREADING_LAYER = "workqueue"

_CHUNK = 2048  # points per parallel work item
_BLOCK = 64  # points transposed at once between channel-major and point-major
_EMPTY = -1  # empty slot of the hash table (keys are >= 0)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


@njit(parallel=True, cache=True)
def _simplices(points, elevation):  # pragma: no cover - compiled
    """Nearest remainder-0 point, rank and barycentric weights (see ``enclosing_simplices``),
    plus the per-chunk minimum and maximum of ``nearest``."""
    num_points, d = points.shape
    d1 = d + 1
    chunks = (num_points + _CHUNK - 1) // _CHUNK
    # Small dtypes: these arrays are written once and read once, and at B x N x (d+1) entries
    # their first-touch page faults cost more than the arithmetic.
    nearest = np.empty((num_points, d1), np.int32)
    rank = np.empty((num_points, d1), np.int8)
    bary = np.empty((num_points, d1), points.dtype)
    lows = np.empty((chunks, d1), np.int64)
    highs = np.empty((chunks, d1), np.int64)
    for chunk in prange(chunks):
        elevated = np.empty(d1, points.dtype)
        offset = np.empty(d1, points.dtype)
        near = np.empty(d1, np.int64)
        rk = np.empty(d1, np.int64)
        weights = np.empty(d1 + 1, points.dtype)
        low = np.full(d1, np.iinfo(np.int64).max, np.int64)
        high = np.full(d1, np.iinfo(np.int64).min, np.int64)
        for p in range(chunk * _CHUNK, min(num_points, (chunk + 1) * _CHUNK)):
            total = 0
            for i in range(d1):
                acc = points.dtype.type(0)
                for j in range(d):
                    acc += elevation[i, j] * points[p, j]
                elevated[i] = acc
                scaled = acc / d1
                up, down = math.ceil(scaled), math.floor(scaled)
                n = up if up * d1 - acc < acc - down * d1 else down
                near[i] = n
                total += n
                offset[i] = acc - n * d1
                rk[i] = 0
            for i in range(d1):
                for j in range(i + 1, d1):
                    # A select, not a branch: the comparisons are unpredictable (3x faster).
                    smaller = 1 if offset[i] < offset[j] else 0
                    rk[i] += smaller
                    rk[j] += 1 - smaller
            for i in range(d1):
                r = rk[i] + total
                if r < 0:
                    near[i] += 1
                    r += d1
                elif r > d:
                    near[i] -= 1
                    r -= d1
                rk[i] = r
            weights[:] = 0
            for i in range(d1):
                value = (elevated[i] - near[i] * d1) / d1
                weights[d - rk[i]] += value
                weights[d1 - rk[i]] -= value
            weights[0] += 1 + weights[d1]
            for k in range(d1):
                bary[p, k] = weights[k]
                nearest[p, k] = near[k]
                rank[p, k] = rk[k]
                low[k] = min(low[k], near[k])
                high[k] = max(high[k], near[k])
        lows[chunk] = low
        highs[chunk] = high
    return nearest, rank, bary, lows, highs


@njit(cache=True)
def _slot(key, mask, shift):  # pragma: no cover - compiled
    return np.int64((np.uint64(key) * _HASH_MULTIPLIER) >> np.uint64(shift)) & mask


@njit(parallel=True, cache=True)
def _hash_vertices(nearest, rank, low, strides, points_per_batch, batch, capacity_bits):
    # pragma: no cover - compiled
    """Name the lattice vertices of every point, one hash table per batch element (in parallel).

    Vertex k of a point has key ``(cell key of q) (d+1) + k`` with ``q = nearest - [rank > d-k]``
    over the first d coordinates. Returns the per-element vertex index of every entry
    ``p (d+1) + k``, the vertex count per element (-1 when its table filled up), the tables and
    the keys of the vertices in order of first appearance.
    """
    num_points, d1 = nearest.shape
    d = d1 - 1
    capacity = 1 << capacity_bits
    mask, shift = capacity - 1, 64 - capacity_bits
    table_keys = np.full((batch, capacity), _EMPTY, np.int64)
    table_index = np.empty((batch, capacity), np.int32)
    vertex_keys = np.empty((batch, capacity // 2), np.int64)
    counts = np.zeros(batch, np.int64)
    local = np.empty(num_points * d1, np.int32)
    for b in prange(batch):
        count = 0
        full = False
        previous = np.full(d1, _EMPTY, np.int64)  # keys of the previous point's vertices
        previous_index = np.zeros(d1, np.int32)
        for i in range(points_per_batch):
            p = b * points_per_batch + i
            base = 0
            for c in range(d):
                base += (np.int64(nearest[p, c]) - low[c]) * strides[c]
            for k in range(d1):
                key = base
                for c in range(d):
                    if rank[p, c] > d - k:
                        key -= strides[c]
                key = key * d1 + k
                # Neighbouring pixels mostly share their simplex: skip the probe then.
                if key == previous[k]:
                    local[p * d1 + k] = previous_index[k]
                    continue
                slot = _slot(key, mask, shift)
                while True:
                    stored = table_keys[b, slot]
                    if stored == key:
                        index = table_index[b, slot]
                        break
                    if stored == _EMPTY:
                        if count == capacity // 2:
                            full = True
                            index = 0
                            break
                        table_keys[b, slot] = key
                        table_index[b, slot] = count
                        vertex_keys[b, count] = key
                        index = count
                        count += 1
                        break
                    slot = (slot + 1) & mask
                if full:
                    break
                local[p * d1 + k] = index
                previous[k] = key
                previous_index[k] = index
            if full:
                break
        counts[b] = -1 if full else count
    return local, counts, table_keys, table_index, vertex_keys


@njit(parallel=True, cache=True)
def _globalize(local, offsets, points_per_batch):  # pragma: no cover - compiled
    """Turn per-element vertex indices into global ones, in place."""
    per_batch = local.shape[0] // offsets.shape[0]
    for e in prange(local.shape[0]):
        local[e] += offsets[e // per_batch]


@njit(parallel=True, cache=True)
def _neighbors(
    vertex_keys, counts, offsets, table_keys, table_index, capacity_bits, zero_extra, along
):  # pragma: no cover - compiled
    """Global index of each vertex's neighbour along each lattice direction, both ways
    ([d+1, M+1], M for an absent vertex and for the all-zero row M)."""
    d1 = along.shape[0]
    num_vertices = offsets[-1] + counts[-1]
    mask, shift = (1 << capacity_bits) - 1, 64 - capacity_bits
    forward = np.full((d1, num_vertices + 1), num_vertices, np.int32)
    backward = np.full((d1, num_vertices + 1), num_vertices, np.int32)
    for b in range(counts.shape[0]):
        for m in prange(counts[b]):
            key = vertex_keys[b, m]
            extra = zero_extra if key % d1 == 0 else 0
            for j in range(d1):
                target = key + extra + along[j]
                slot = _slot(target, mask, shift)
                while True:
                    stored = table_keys[b, slot]
                    if stored == target:
                        found = offsets[b] + table_index[b, slot]
                        forward[j, offsets[b] + m] = found
                        backward[j, found] = offsets[b] + m  # one predecessor along j
                        break
                    if stored == _EMPTY:
                        break
                    slot = (slot + 1) & mask
    return forward, backward


@njit(parallel=True, cache=True)
def _splat(values, vertex_of_entry, bary, num_vertices, num_threads):  # pragma: no cover
    """Lattice values [M + 1, C] of channel-major ``values [B, C, N]``.

    Each thread accumulates a range of points into its own buffer. Points are read in blocks
    that are transposed on the fly: reading the C channels of one point directly would stride
    by N, and for power-of-two N the C streams collide in the same cache sets (measured 10x
    slower at 512 x 512).
    """
    batch, channels, n = values.shape
    d1 = bary.shape[1]
    blocks_per_image = (n + _BLOCK - 1) // _BLOCK
    tasks = batch * blocks_per_image
    partial = np.zeros((num_threads, num_vertices + 1, channels), values.dtype)
    per_thread = (tasks + num_threads - 1) // num_threads
    for t in prange(num_threads):
        block = np.empty((_BLOCK, channels), values.dtype)
        for task in range(t * per_thread, min(tasks, (t + 1) * per_thread)):
            b, start = task // blocks_per_image, (task % blocks_per_image) * _BLOCK
            stop = min(n, start + _BLOCK)
            for c in range(channels):
                for i in range(start, stop):
                    block[i - start, c] = values[b, c, i]
            for i in range(start, stop):
                p = b * n + i
                for k in range(d1):
                    vertex = vertex_of_entry[p * d1 + k]
                    weight = bary[p, k]
                    for c in range(channels):
                        partial[t, vertex, c] += weight * block[i - start, c]
    lattice = partial[0]
    for t in range(1, num_threads):
        lattice += partial[t]
    return lattice


@njit(parallel=True, cache=True)
def _blur(lattice, forward, backward, directions, center, neighbor):  # pragma: no cover
    num_rows, channels = lattice.shape  # last row: absent vertices, stays zero
    current = lattice
    for j in directions:
        blurred = np.empty_like(current)
        for m in prange(num_rows):
            f, g = forward[j, m], backward[j, m]
            for c in range(channels):
                blurred[m, c] = neighbor * (current[f, c] + current[g, c]) + center * current[m, c]
        current = blurred
    return current


@njit(parallel=True, cache=True)
def _slice(lattice, vertex_of_entry, bary, scale, n, num_threads):  # pragma: no cover
    """Channel-major ``out [B, C, N]`` from lattice values [M + 1, C], times ``scale[b]``, in
    transposed blocks (folding the scale in saves a pass over, and an allocation of, the output)."""
    batch = scale.shape[0]
    channels = lattice.shape[1]
    d1 = bary.shape[1]
    out = np.empty((batch, channels, n), lattice.dtype)
    blocks_per_image = (n + _BLOCK - 1) // _BLOCK
    tasks = batch * blocks_per_image
    per_thread = (tasks + num_threads - 1) // num_threads
    for t in prange(num_threads):
        block = np.empty((_BLOCK, channels), lattice.dtype)
        for task in range(t * per_thread, min(tasks, (t + 1) * per_thread)):
            b, start = task // blocks_per_image, (task % blocks_per_image) * _BLOCK
            stop = min(n, start + _BLOCK)
            for i in range(start, stop):
                p = b * n + i
                for c in range(channels):
                    block[i - start, c] = 0
                for k in range(d1):
                    vertex = vertex_of_entry[p * d1 + k]
                    weight = bary[p, k]
                    for c in range(channels):
                        block[i - start, c] += weight * lattice[vertex, c]
            for c in range(channels):
                for i in range(start, stop):
                    out[b, c, i] = block[i - start, c] * scale[b]
    return out


@njit(parallel=True, cache=True)
def _exact_degrees(points, samples, neighbors, points_per_batch, batch):  # pragma: no cover
    """``sum_q exp(-|f_p - f_q|^2 / 2)`` over q in ``neighbors``, for p in ``samples``, per batch
    element: [batch, len(samples)]."""
    d = points.shape[1]
    num_samples, num_neighbors = samples.shape[0], neighbors.shape[0]
    out = np.zeros((batch, num_samples), np.float64)
    for b in range(batch):
        # Contiguous copies: the inner loop then streams through memory.
        near = np.empty((num_neighbors, d), points.dtype)
        for q in range(num_neighbors):
            near[q] = points[b * points_per_batch + neighbors[q]]
        for s in prange(num_samples):
            p = points[b * points_per_batch + samples[s]]
            acc = 0.0
            for q in range(num_neighbors):
                sq = 0.0
                for j in range(d):
                    diff = p[j] - near[q, j]
                    sq += diff * diff
                if sq < NEGLIGIBLE_SQ_DISTANCE:  # most pairs are far: skip their exp
                    acc += math.exp(-0.5 * sq)
            out[b, s] = acc
    return out


@njit(cache=True)
def _splat_ones(vertex_of_entry, bary, num_vertices):  # pragma: no cover - compiled
    lattice = np.zeros((num_vertices + 1, 1), bary.dtype)
    d1 = bary.shape[1]
    for p in range(bary.shape[0]):
        for k in range(d1):
            lattice[vertex_of_entry[p * d1 + k], 0] += bary[p, k]
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


class NumbaLatticeOps:
    """The lattice of ``points [P, d]`` (CPU) with ``apply(values [B, C, N]) -> [B, C, N]``."""

    def __init__(self, points: Tensor, batch_size: int, points_per_batch: int) -> None:
        d = points.shape[1]
        self.dims, self.batch_size, self.points_per_batch = d, batch_size, points_per_batch
        self._threads = self._sync_threads()
        array = points.contiguous().numpy()
        elevation = elevation_matrix(d, points.dtype).numpy()
        nearest, rank, self._bary, lows, highs = _simplices(array, elevation)
        layout = KeyLayout.from_range(
            lows[:, :d].min(axis=0).tolist(), highs[:, :d].max(axis=0).tolist(), 1, d + 1
        )  # one table per batch element: keys need no batch offset
        low = np.array(layout.low, np.int64)
        strides = np.array(layout.strides, np.int64)
        bits = max(10, math.ceil(math.log2(max(2, points_per_batch))) + 1)
        while True:
            local, counts, table_keys, table_index, vertex_keys = _hash_vertices(
                nearest, rank, low, strides, points_per_batch, batch_size, bits
            )
            if counts.min() >= 0:
                break
            bits += 1  # a table more than half full: grow and hash again
        offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)[:-1]])
        _globalize(local, offsets, points_per_batch)
        self._vertex_of_entry = local
        self.num_vertices = int(counts.sum())
        zero_extra, along = layout.neighbor_offsets(d)
        self._forward, self._backward = _neighbors(
            vertex_keys,
            counts,
            offsets,
            table_keys,
            table_index,
            bits,
            zero_extra,
            np.array(along, np.int64),
        )
        self._order = np.concatenate([np.arange(d + 1), np.arange(d, -1, -1)]).astype(np.int64)

    @staticmethod
    def _sync_threads() -> int:
        """Use as many numba threads as PyTorch does (``torch.set_num_threads``)."""
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        return threads

    def exact_degrees(self, points: Tensor, samples: Tensor, neighbors: Tensor) -> Tensor:
        """Exact ``sum_q W_pq`` over q in ``neighbors`` for p in ``samples``: [B, S]."""
        out = _exact_degrees(
            points.contiguous().numpy(),
            samples.numpy(),
            neighbors.numpy(),
            self.points_per_batch,
            self.batch_size,
        )
        return torch.from_numpy(out).to(points.dtype)

    def lattice_degrees(self, samples: Tensor) -> Tensor:
        """``(S^T B^T B S 1)_p`` for p in ``samples`` of every batch element: [B, S]."""
        lattice = _splat_ones(self._vertex_of_entry, self._bary, self.num_vertices)
        lattice = _blur(
            lattice,
            self._forward,
            self._backward,
            self._order,
            lattice.dtype.type(BLUR_CENTER),
            lattice.dtype.type(BLUR_NEIGHBOR),
        )
        offsets = torch.arange(self.batch_size)[:, None] * self.points_per_batch
        points = (offsets + samples[None, :]).reshape(-1).numpy()
        out = _slice_at(lattice, self._vertex_of_entry, self._bary, points)
        return torch.from_numpy(out.astype(self._bary.dtype)).reshape(self.batch_size, -1)

    def apply(self, values: Tensor, scale: Tensor) -> Tensor:
        """``scale[b] S^T B^T B S v`` for CPU ``values [B, C, N]`` in the compute dtype."""
        self._threads = self._sync_threads()
        array = values.detach().contiguous().numpy()
        lattice = _splat(array, self._vertex_of_entry, self._bary, self.num_vertices, self._threads)
        lattice = _blur(
            lattice,
            self._forward,
            self._backward,
            self._order,
            lattice.dtype.type(BLUR_CENTER),
            lattice.dtype.type(BLUR_NEIGHBOR),
        )
        n = values.shape[2]
        return torch.from_numpy(
            _slice(
                lattice,
                self._vertex_of_entry,
                self._bary,
                scale.to(values.dtype).numpy(),
                n,
                self._threads,
            )
        )
