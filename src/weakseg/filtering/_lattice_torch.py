"""The pure-PyTorch lattice backend: runs on every device, the reference for the others.

Construction sorts integer keys instead of hashing: one stable sort groups the points by their
enclosing simplex, a second names the vertices from the simplices' corners. Splat and slice are
CSR sparse-dense products; the blur gathers neighbour rows.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from weakseg.filtering._lattice_geometry import (
    NEGLIGIBLE_SQ_DISTANCE,
    BlurPlan,
    KeyLayout,
    elevation_matrix,
)


def _csr(rows: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix built from indices that are valid by construction (no invariant check)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, cols, values, size=size, check_invariants=False)


def descending_rank(offset: Tensor) -> Tensor:
    """Rank of each entry within the rows of ``offset [P, d+1]``, 0 for the largest; of two equal
    entries the later one ranks lower. One comparison per pair of columns, as in Adams et al.;
    much faster than sorting many rows of a few entries."""
    d1 = offset.shape[1]
    rank = torch.zeros(offset.shape, dtype=torch.int64, device=offset.device)
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = offset[:, i] < offset[:, j]
            rank[:, i] += smaller
            rank[:, j] += ~smaller
    return rank


def enclosing_simplices(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest remainder-0 point, rank and barycentric weights of each point's simplex.

    Args:
        points: Tensor[P, d], features already divided by their bandwidths.

    Returns:
        ``nearest`` int64 [P, d+1] (coordinates / (d+1)), ``rank`` int64 [P, d+1] in 0..d,
        ``bary`` [P, d+1] (weight of the vertex of remainder k, rows sum to 1).
    """
    num_points, d = points.shape
    elevated = points @ elevation_matrix(d, points.dtype, points.device).T  # (P, d+1)
    scaled = elevated / (d + 1)
    up, down = torch.ceil(scaled), torch.floor(scaled)
    nearest = torch.where(up * (d + 1) - elevated < elevated - down * (d + 1), up, down)
    nearest = nearest.to(torch.int64)
    rank = descending_rank(elevated - nearest.to(points.dtype) * (d + 1))
    # The rounded point need not lie on sum(x) = 0: move the coordinates of extreme rank.
    rank = rank + nearest.sum(dim=1, keepdim=True)
    shift = (rank < 0).to(torch.int64) - (rank > d).to(torch.int64)
    nearest = nearest + shift
    rank = rank + shift * (d + 1)
    offset = (elevated - nearest.to(points.dtype) * (d + 1)) / (d + 1)
    bary = torch.zeros(num_points, d + 2, dtype=points.dtype, device=points.device)
    bary.scatter_add_(1, d - rank, offset)
    bary.scatter_add_(1, d + 1 - rank, -offset)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return nearest, rank, bary[:, : d + 1].contiguous()


class TorchLatticeOps:
    """Splat, blur and slice matrices for ``points [P, d]`` (P = batch_size x points_per_batch).

    ``apply(values [B, C, N]) -> [B, C, N]`` computes ``S^T B^T B S v`` (unscaled).
    """

    def __init__(
        self, points: Tensor, batch_size: int, points_per_batch: int, symmetric: bool = True
    ) -> None:
        d, device = points.shape[1], points.device
        self._plan = BlurPlan.for_dims(d, symmetric)
        num_points = points.shape[0]
        self.dims, self.batch_size, self.points_per_batch = d, batch_size, points_per_batch
        nearest, rank, bary = enclosing_simplices(points)

        permutations = (d + 1) ** d  # rank rows, encoded by their first d entries
        layout = KeyLayout.from_range(
            nearest[:, :d].amin(dim=0).tolist(),
            nearest[:, :d].amax(dim=0).tolist(),
            batch_size,
            permutations,
        )
        low = torch.tensor(layout.low, dtype=torch.int64, device=device)
        strides = torch.tensor(layout.strides, dtype=torch.int64, device=device)
        batch_index = torch.arange(num_points, device=device) // points_per_batch
        cell_key = ((nearest[:, :d] - low) * strides).sum(dim=1) + batch_index * layout.cells

        # One stable sort of the points by simplex groups the points that share all vertices.
        rank_weights = torch.tensor([(d + 1) ** i for i in range(d)], device=device)
        simplex_key = cell_key * permutations + (rank[:, :d] * rank_weights).sum(dim=1)
        _, point_order = torch.sort(simplex_key, stable=True)
        _, counts = torch.unique_consecutive(simplex_key[point_order], return_counts=True)
        num_simplices = counts.shape[0]
        ends = torch.cumsum(counts, dim=0)
        simplex_of_point = torch.empty_like(point_order)
        simplex_of_point[point_order] = torch.repeat_interleave(
            torch.arange(num_simplices, device=device), counts
        )

        # Vertex keys of each simplex, from one representative point: vertex k has coordinates
        # (d+1) q + k with q = nearest - [rank > d - k].
        first = point_order[ends - counts]  # (U,)
        remainders = torch.arange(d + 1, device=device)
        below = rank[first, None, :d] > (d - remainders)[None, :, None]  # (U, k, i)
        vertex_key = (cell_key[first, None] - (below.to(torch.int64) * strides).sum(dim=2)) * (
            d + 1
        ) + remainders  # (U, d+1)
        vertex_keys, vertex_of_corner = torch.unique(vertex_key, sorted=True, return_inverse=True)
        num_vertices = vertex_keys.shape[0]

        # Splat, stage 1: A [(d+1) U, P] sums the weighted values of each simplex's points into
        # its d+1 corners. It acts on the values sorted by simplex, so row k U + u covers the
        # contiguous run of the points of simplex u.
        self._point_order = point_order
        corner_rows = torch.zeros((d + 1) * num_simplices + 1, dtype=torch.int64, device=device)
        corner_rows[1:] = (remainders[:, None] * num_points + ends[None, :]).reshape(-1)
        self._splat_corners = _csr(
            corner_rows,
            torch.arange(num_points, device=device).repeat(d + 1),
            bary[point_order].T.reshape(-1),
            size=((d + 1) * num_simplices, num_points),
        )
        # Splat, stage 2: G [M, (d+1) U] adds the corners into their lattice vertices.
        corner_vertex = vertex_of_corner.T.reshape(-1)  # corner k U + u -> vertex
        vertex_sorted, corner_order = torch.sort(corner_vertex, stable=True)
        vertex_rows = torch.zeros(num_vertices + 1, dtype=torch.int64, device=device)
        vertex_rows[1:] = torch.cumsum(torch.bincount(vertex_sorted, minlength=num_vertices), 0)
        self._splat_vertices = _csr(
            vertex_rows,
            corner_order,
            torch.ones_like(corner_order, dtype=points.dtype),
            size=(num_vertices, (d + 1) * num_simplices),
        )
        # Slice: S^T [P, M], row p = barycentric weights on the vertices of p's simplex.
        self._slice = _csr(
            torch.arange(0, num_points * (d + 1) + 1, d + 1, device=device),
            vertex_of_corner[simplex_of_point].reshape(-1),
            bary.reshape(-1),
            size=(num_points, num_vertices),
        )

        # Neighbours along each lattice direction. Mass blurred towards a vertex that no point
        # uses is dropped, as in the classic lattice: index M is an all-zero row standing for
        # every absent vertex.
        zero_extra, along = layout.neighbor_offsets(d)
        step = torch.where((vertex_keys % (d + 1)) == 0, zero_extra, 0)  # (M,)
        vertex_index = torch.arange(num_vertices, device=device)
        absent = torch.full((1,), num_vertices, dtype=torch.int64, device=device)
        self._neighbors: list[tuple[Tensor, Tensor]] = []
        for j in range(d + 1):
            target = vertex_keys + step + along[j]
            pos = torch.searchsorted(vertex_keys, target).clamp_max_(num_vertices - 1)
            found = vertex_keys[pos] == target
            forward = torch.where(found, pos, num_vertices)
            backward = torch.full_like(vertex_index, num_vertices)
            backward[pos[found]] = vertex_index[found]
            self._neighbors.append((torch.cat([forward, absent]), torch.cat([backward, absent])))
        self.num_vertices = num_vertices

    def exact_degrees(self, points: Tensor, samples: Tensor, neighbors: Tensor) -> Tensor:
        """Exact ``sum_q W_pq`` over q in ``neighbors`` for p in ``samples``: [B, S]."""
        grouped = points.reshape(self.batch_size, self.points_per_batch, self.dims)
        grouped = grouped - grouped.mean(dim=1, keepdim=True)  # less cancellation below
        p, q = grouped[:, samples], grouped[:, neighbors]  # (B, S, D), (B, Q, D)
        cross = p @ q.transpose(1, 2)  # (B, S, Q)
        sq_dist = (p * p).sum(2)[:, :, None] + (q * q).sum(2)[:, None, :] - 2 * cross
        kernel = torch.exp(-0.5 * sq_dist.clamp_min(0.0))
        # Same cut-off as the numba backend, so both calibrate to the same scale.
        return torch.where(sq_dist < NEGLIGIBLE_SQ_DISTANCE, kernel, 0.0).sum(dim=2)

    def lattice_degrees(self, samples: Tensor) -> Tensor:
        """``(S^T B S 1)_p`` for p in ``samples`` of every batch element: [B, S]."""
        ones = self._slice.values().new_ones(self.batch_size, 1, self.points_per_batch)
        return self.apply(ones, ones.new_ones(self.batch_size))[:, 0, samples]

    def _blur(self, lattice_values: Tensor, plan: BlurPlan) -> Tensor:
        # lattice_values: (M + 1, C), the last row zero.
        for j in plan.directions:
            forward, backward = self._neighbors[j]
            blurred = lattice_values.index_select(0, forward)
            blurred += lattice_values.index_select(0, backward)
            blurred.add_(lattice_values, alpha=plan.center / plan.neighbor)
            blurred *= plan.neighbor
            lattice_values = blurred
        return lattice_values

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
        """``diag(out_weight) scale[b] S^T B S diag(in_weight) v`` for ``values [B, C, N]``
        in the compute dtype (``B^T`` for ``B`` if ``transpose``), point weights ``[B, N]`` or
        ``None`` (ones); written into ``out`` when given, or added to it if ``accumulate`` (as
        the numba backend's ``apply``)."""
        batch, channels, n = values.shape
        if in_weight is not None:
            values = values * in_weight[:, None]
        points = values.transpose(1, 2).reshape(batch * n, channels)  # (P, C)
        grouped = points.index_select(0, self._point_order)  # sorted by simplex
        corners = torch.sparse.mm(self._splat_corners, grouped)  # ((d+1) U, C)
        lattice_values = values.new_empty(self.num_vertices + 1, channels)
        lattice_values[-1] = 0
        lattice_values[:-1] = torch.sparse.mm(self._splat_vertices, corners)  # (M, C)
        plan = self._plan.transposed() if transpose else self._plan
        lattice_values = self._blur(lattice_values, plan)
        result = torch.sparse.mm(self._slice, lattice_values[:-1])  # (P, C)
        result = result.reshape(batch, n, channels)
        result *= scale.to(result.dtype)[:, None, None]
        result = result.transpose(1, 2)
        if out_weight is not None:
            result = result * out_weight[:, None]
        if out is None:
            return result
        return out.add_(result) if accumulate else out.copy_(result)
