r"""Exact Euclidean distance from every pixel (or voxel) to the nearest scribble of each class.

The squared distance transform of Felzenszwalb & Huttenlocher ("Distance Transforms of Sampled
Functions", 2012): a 1D pass along each axis computes the lower envelope of the parabolas
:math:`(x - q)^2 s_a^2 + f(q)`, so the N-d transform is separable and costs O(N) per axis and
class. Written with numba (compiled once and cached on disk); no SciPy import, which costs
about 0.5 s of start-up in a one-shot command.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, prange

__all__ = ["BlockedDistances", "blocked_distances", "class_distances"]

_INF = 1e20


@njit(cache=True)
def _envelope_1d(f, out, v, z):  # pragma: no cover - compiled
    """Squared-distance transform of one line ``f`` (unit spacing) into ``out``."""
    n = f.shape[0]
    k = 0
    v[0] = 0
    z[0] = -_INF
    z[1] = _INF
    for q in range(1, n):
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = _INF
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        out[q] = (q - v[k]) * (q - v[k]) + f[v[k]]


@njit(parallel=True, cache=True)
def _transform_lines(lines, scale):  # pragma: no cover - compiled
    """Apply the 1D transform to every row of ``lines [M, L]`` (in place), with the axis's
    squared spacing folded in: values are divided by it first and multiplied back after."""
    m, n = lines.shape
    for i in prange(m):
        f = np.empty(n)
        out = np.empty(n)
        v = np.empty(n, np.int64)
        z = np.empty(n + 1)
        for q in range(n):
            f[q] = lines[i, q] / scale
        _envelope_1d(f, out, v, z)
        for q in range(n):
            lines[i, q] = min(out[q] * scale, _INF)


def class_distances(
    labels: np.ndarray,
    num_classes: int,
    *,
    spacing: Sequence[float] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Euclidean distance from every point to the nearest labeled point of each class.

    Args:
        labels: int array ``[*spatial]`` (any number of dims): class ids ``0..K-1``,
            ``ignore_index`` = unlabeled.
        num_classes: K.
        spacing: physical step along each axis (default 1); distances are in its units.
        ignore_index: the "unlabeled" id.

    Returns:
        float32 ``[K, *spatial]``; ``inf`` for a class without any labeled point.

    Example:
        >>> labels = np.full((1, 5), 255); labels[0, 0], labels[0, 4] = 0, 1
        >>> class_distances(labels, 2)[:, 0].tolist()
        [[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0]]
    """
    spacing = [1.0] * labels.ndim if spacing is None else [float(s) for s in spacing]
    out = np.empty((num_classes, *labels.shape), np.float32)
    for k in range(num_classes):
        squared = np.where(labels == k, 0.0, _INF)  # float64 [*spatial]
        if not (labels == k).any():
            out[k] = np.inf
            continue
        for axis, step in enumerate(spacing):
            moved = np.ascontiguousarray(np.moveaxis(squared, axis, -1))
            lines = moved.reshape(-1, moved.shape[-1])
            _transform_lines(lines, step * step)
            squared = np.moveaxis(lines.reshape(moved.shape), -1, axis)
        out[k] = np.sqrt(squared)
    return out


@njit(cache=True)
def _sweep(dist, blocked, shape, offsets, steps, forward):  # pragma: no cover - compiled
    """One raster pass (forward or backward) of the 4-neighbour (6 in 3D) chamfer transform:
    ``dist[p] = min(dist[p], dist[p - o] + step)`` over the neighbours already visited, never
    entering a ``blocked`` point. Returns whether anything changed."""
    n = dist.shape[0]
    ndim = shape.shape[0]
    coord = np.zeros(ndim, np.int64)
    changed = False
    for i in range(n):
        p = i if forward else n - 1 - i
        rest = p
        for a in range(ndim - 1, -1, -1):
            coord[a] = rest % shape[a]
            rest //= shape[a]
        if blocked[p]:
            continue
        best = dist[p]
        for j in range(offsets.shape[0]):
            axis = offsets[j, 0]
            sign = offsets[j, 1] if forward else -offsets[j, 1]
            c = coord[axis] - sign
            if c < 0 or c >= shape[axis]:
                continue
            q = p - sign * offsets[j, 2]
            candidate = dist[q] + steps[axis]
            if candidate < best:
                best = candidate
        if best < dist[p]:
            dist[p] = best
            changed = True
    return changed


def _geometry(
    spatial: Sequence[int], spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(shape, strides, offsets, steps)`` of a C-ordered grid for the numba passes."""
    spacing = [1.0] * len(spatial) if spacing is None else [float(s) for s in spacing]
    strides = np.cumprod((1, *spatial[::-1]))[:-1][::-1].astype(np.int64)  # C order
    offsets = np.array([(a, 1, strides[a]) for a in range(len(spatial))], np.int64)
    return np.array(spatial, np.int64), strides, offsets, np.array(spacing, np.float64)


def _class_distance(
    flat: np.ndarray, k: int, geometry: tuple, ignore_index: int, max_sweeps: int
) -> tuple[np.ndarray, bool]:
    """Class k's blocked distances (float64 ``[N]``) by raster sweeps, and whether the sweeps
    reached their fixed point (the shortest path lengths) within ``max_sweeps`` pairs."""
    shape, _, offsets, steps = geometry
    dist = np.where(flat == k, 0.0, np.inf)
    blocked = (flat != k) & (flat != ignore_index)
    for _ in range(max_sweeps):
        changed = _sweep(dist, blocked, shape, offsets, steps, True)
        changed = _sweep(dist, blocked, shape, offsets, steps, False) or changed
        if not changed:
            return dist, True
    return dist, False


def blocked_distances(
    labels: np.ndarray,
    num_classes: int,
    *,
    spacing: Sequence[float] | None = None,
    ignore_index: int = 255,
    max_sweeps: int = 8,
) -> np.ndarray:
    """Distance from every point to the scribbles of each class along paths (axis-aligned
    steps, city-block lengths) that never cross a scribble of another class.

    A region enclosed by another class's stroke (e.g. everything outside a closed
    background contour, for the structures scribbled inside it) is unreachable: ``inf``.
    Axis-aligned steps cannot slip through a diagonal one-pixel stroke. Computed by
    alternating forward and backward raster sweeps until nothing changes (at most
    ``max_sweeps`` pairs: paths winding more often than that are over-estimated).

    Args:
        labels: int ``[*spatial]``: class ids ``0..K-1``, ``ignore_index`` = unlabeled.
        num_classes: K.
        spacing: physical step along each axis (default 1).
        ignore_index: the "unlabeled" id.
        max_sweeps: limit on the forward/backward sweep pairs.

    Returns:
        float32 ``[K, *spatial]``.

    Example:
        >>> labels = np.full((1, 6), 255); labels[0, 0], labels[0, 2], labels[0, 5] = 1, 0, 1
        >>> blocked_distances(labels, 2)[1, 0].tolist()
        [0.0, 1.0, inf, 2.0, 1.0, 0.0]
    """
    geometry = _geometry(labels.shape, spacing)
    flat = labels.reshape(-1)
    out = np.empty((num_classes, flat.size), np.float32)
    for k in range(num_classes):
        out[k] = _class_distance(flat, k, geometry, ignore_index, max_sweeps)[0]
    return out.reshape(num_classes, *labels.shape)


@njit(cache=True)
def _neighbour(p, axis, sign, shape, strides):  # pragma: no cover - compiled
    """Flat index of the neighbour of ``p`` one step along ``axis`` (``sign`` +-1), -1 at
    the border."""
    c = (p // strides[axis]) % shape[axis] + sign
    if c < 0 or c >= shape[axis]:
        return -1
    return p + sign * strides[axis]


@njit(cache=True)
def _is_supported(dist, affected, r, shape, strides, steps):  # pragma: no cover - compiled
    """Whether a point not in ``affected`` gives ``r`` its value: ``d(s) + step == d(r)``."""
    for axis in range(shape.shape[0]):
        for sign in (-1, 1):
            s = _neighbour(r, axis, sign, shape, strides)
            if s >= 0 and not affected[s] and dist[s] + steps[axis] == dist[r]:
                return True
    return False


@njit(cache=True)
def _lowest_through_neighbours(dist, p, shape, strides, steps):  # pragma: no cover
    """``min(d(p), min_q d(q) + step)`` over the neighbours q of ``p`` (a blocked one is inf)."""
    best = dist[p]
    for axis in range(shape.shape[0]):
        for sign in (-1, 1):
            q = _neighbour(p, axis, sign, shape, strides)
            if q >= 0 and dist[q] + steps[axis] < best:
                best = dist[q] + steps[axis]
    return best


@njit(cache=True)
def _update_class(
    dist, old, new, changed, k, ignore_index, shape, strides, steps
):  # pragma: no cover - compiled
    """Turn class k's converged distances ``dist`` (float64 ``[N]``) for the labels ``old``
    into those for ``new``, which differ at the flat indices ``changed``, in place.

    1. The points whose value no path of the new labels gives any more: the former sources
       and the newly blocked points, then, in turn, every point all of whose supports (the
       neighbours s with ``d(s) + step == d(r)``) are among them. Their values go to inf.
    2. Label-correcting relaxation (a FIFO of points whose value fell) from those points'
       neighbours, the new sources and the unblocked points, until nothing falls.

    The result is the fixed point of the sweeps, the shortest path lengths (each value a
    path's sum, every point no more than a neighbour + step), whatever the order of the
    updates: the same numbers as a recomputation.
    """
    n = dist.shape[0]
    affected = np.zeros(n, np.bool_)
    order = np.empty(n, np.int64)
    count = 0
    for p in changed:
        was_blocked = old[p] != k and old[p] != ignore_index
        is_blocked = new[p] != k and new[p] != ignore_index
        lost = (old[p] == k and new[p] != k) or (is_blocked and not was_blocked)
        if lost and dist[p] < np.inf and not affected[p]:
            affected[p] = True
            order[count] = p
            count += 1
    head = 0
    while head < count:  # each point enters once: ``order`` never wraps
        p = order[head]
        head += 1
        for axis in range(shape.shape[0]):
            for sign in (-1, 1):
                r = _neighbour(p, axis, sign, shape, strides)
                if r < 0 or affected[r] or dist[p] + steps[axis] != dist[r]:
                    continue
                if not _is_supported(dist, affected, r, shape, strides, steps):
                    affected[r] = True
                    order[count] = r
                    count += 1
    for i in range(count):
        dist[order[i]] = np.inf
    for p in changed:  # blocked points are inf, so no path enters them
        if new[p] != k and new[p] != ignore_index:
            dist[p] = np.inf

    queue = np.empty(n, np.int64)  # circular; a point is in it at most once at a time
    queued = np.zeros(n, np.bool_)
    tail = 0
    size = 0
    starts = np.concatenate((order[:count], changed))
    for p in starts:
        if new[p] != k and new[p] != ignore_index:
            continue
        if new[p] == k:
            value = 0.0
        else:
            value = _lowest_through_neighbours(dist, p, shape, strides, steps)
        if value < dist[p]:
            dist[p] = value
            if not queued[p]:
                queued[p] = True
                queue[tail] = p
                tail = (tail + 1) % n
                size += 1
    head = 0
    while size > 0:
        p = queue[head]
        head = (head + 1) % n
        size -= 1
        queued[p] = False
        for axis in range(shape.shape[0]):
            for sign in (-1, 1):
                r = _neighbour(p, axis, sign, shape, strides)
                if (
                    r < 0
                    or dist[p] + steps[axis] >= dist[r]
                    or (new[r] != k and new[r] != ignore_index)
                ):
                    continue
                dist[r] = dist[p] + steps[axis]
                if not queued[r]:
                    queued[r] = True
                    queue[tail] = r
                    tail = (tail + 1) % n
                    size += 1


class BlockedDistances:
    """The blocked distances of :func:`blocked_distances` for labels that change, as in an
    annotation loop: :meth:`update` recomputes only what an edit changes.

    An edit (strokes added, erased or relabeled) changes class k's map where a shortest path
    used a point that is no longer a k scribble or is now another class's (such points are
    few: city-block shortest paths are many), and where a new k scribble or an unblocked
    point is nearer. :meth:`update` finds those points and relaxes them alone; its values
    equal a recomputation's to the bit. A class whose sweeps stopped at ``max_sweeps``
    before their fixed point is recomputed instead.

    Args:
        labels, num_classes, spacing, ignore_index, max_sweeps: as :func:`blocked_distances`.

    Example:
        >>> labels = np.full((1, 6), 255); labels[0, 0], labels[0, 5] = 1, 0
        >>> maps = BlockedDistances(labels, 2)
        >>> labels[0, 2] = 0
        >>> maps.update(labels)
        >>> maps.values()[1, 0].tolist() == blocked_distances(labels, 2)[1, 0].tolist()
        True
    """

    def __init__(
        self,
        labels: np.ndarray,
        num_classes: int,
        *,
        spacing: Sequence[float] | None = None,
        ignore_index: int = 255,
        max_sweeps: int = 8,
    ) -> None:
        self.shape = tuple(labels.shape)
        self.num_classes, self.ignore_index, self.max_sweeps = num_classes, ignore_index, max_sweeps
        self._geometry = _geometry(self.shape, spacing)
        self.spacing = [float(s) for s in self._geometry[3]]
        self._labels = np.array(labels, dtype=np.int64).reshape(-1)
        self._dist = np.empty((num_classes, self._labels.size))  # float64: exact updates
        self._converged = np.zeros(num_classes, bool)
        for k in range(num_classes):
            self._recompute(k)

    def _recompute(self, k: int) -> None:
        self._dist[k], self._converged[k] = _class_distance(
            self._labels, k, self._geometry, self.ignore_index, self.max_sweeps
        )

    def update(self, labels: np.ndarray) -> None:
        """Follow the labels ``[*spatial]`` after an edit (any change of any pixel)."""
        if tuple(labels.shape) != self.shape:
            raise ValueError(f"labels of shape {tuple(labels.shape)}, expected {self.shape}")
        new = np.asarray(labels, dtype=np.int64).reshape(-1)
        changed = np.flatnonzero(new != self._labels)
        if changed.size == 0:
            return
        old, self._labels = self._labels, new.copy()
        shape, strides, _, steps = self._geometry
        for k in range(self.num_classes):
            if self._converged[k]:
                _update_class(
                    self._dist[k], old, self._labels, changed, k, self.ignore_index,
                    shape, strides, steps,
                )  # fmt: skip
            else:
                self._recompute(k)

    def labels(self) -> np.ndarray:
        """The labels ``[*spatial]`` (int64) the maps are those of."""
        return self._labels.reshape(self.shape)

    def values(self) -> np.ndarray:
        """float32 ``[K, *spatial]``, those of :func:`blocked_distances` for the labels."""
        return self._dist.astype(np.float32).reshape(self.num_classes, *self.shape)
