"""The pure-PyTorch lattice backend: runs on every device, the reference for the others.

Construction sorts integer keys instead of hashing: one stable sort groups the points by their
enclosing simplex, a second names the vertices from the simplices' corners. Splat, every blur
pass and slice are then one CSR sparse-dense product each, so that filtering C channels is
about 17 operations (kernel launches on a GPU) whatever C and D: a transposing copy in, the
splat ``S``, ``2 (d + 1)`` passes, the slice ``S^T``, and one scaling product that writes the
channel-major result. Building is about a hundred operations and one host synchronization for
the key bounds (which also checks that the features are finite), plus the two implied by the
data-dependent sizes of ``unique``.
"""

from __future__ import annotations

import math
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


def descending_rank(offset: Tensor, *, broadcast: bool | None = None) -> Tensor:
    """Rank of each entry within the rows of ``offset [P, d+1]``, 0 for the largest; of two equal
    entries the later one ranks lower: ``rank_i = #{j: o_j > o_i} + #{j < i: o_j = o_i}``, as
    the pairwise comparisons of Adams et al. give (much faster than sorting many rows of a few
    entries). With ``broadcast`` (the default off the CPU), one broadcast comparison
    ``[P, d+1, d+1]`` (five launches whatever d); otherwise (the default on the CPU, where that
    broadcast runs 6x slower) one comparison per pair of columns. Both give the same ranks."""
    d1 = offset.shape[1]
    if broadcast is None:
        broadcast = offset.device.type != "cpu"
    if broadcast:
        mine, theirs = offset[:, :, None], offset[:, None, :]  # o_i, o_j
        before = torch.ones(d1, d1, dtype=torch.bool, device=offset.device).tril(-1)  # j < i
        return torch.where(before, theirs >= mine, theirs > mine).sum(dim=2)
    rank = torch.zeros(offset.shape, dtype=torch.uint8, device=offset.device)
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = offset[:, i] < offset[:, j]
            rank[:, i] += smaller
            rank[:, j] += ~smaller
    return rank.to(torch.int64)


def enclosing_simplices(points: Tensor) -> tuple[Tensor, Tensor, Tensor, list[float]]:
    """Nearest remainder-0 point, rank and barycentric weights of each point's simplex.

    Args:
        points: Tensor[P, d], features already divided by their bandwidths.

    Returns:
        ``nearest`` int64 [P, d+1] (coordinates / (d+1)), ``rank`` int64 [P, d+1] in 0..d,
        ``bary`` [P, d+1] (weight of the vertex of remainder k, rows sum to 1), and the bounds
        ``[min_0 .. min_{d-1}, max_0 .. max_{d-1}]`` of ``nearest``'s first d coordinates (the
        one host synchronization of the build).

    Raises:
        ValueError: non-finite points (caught from the bounds, without a pass of its own).
    """
    num_points, d = points.shape
    elevated = points @ elevation_matrix(d, points.dtype, points.device).T  # (P, d+1)
    scaled = elevated / (d + 1)
    up, down = torch.ceil(scaled), torch.floor(scaled)
    nearest = torch.where(up * (d + 1) - elevated < elevated - down * (d + 1), up, down)
    rank = descending_rank(elevated - nearest * (d + 1))
    # NaN and inf propagate into the bounds: one synchronization checks both.
    bounds = torch.cat([nearest[:, :d].amin(dim=0), nearest[:, :d].amax(dim=0)]).tolist()
    if not all(math.isfinite(b) for b in bounds):
        bad = int((~torch.isfinite(points)).sum())
        raise ValueError(f"features contains {bad} non-finite values (NaN or inf)")
    # The rounded point need not lie on sum(x) = 0: move the coordinates of extreme rank (by
    # one step at most, which the key layout's margins absorb).
    nearest = nearest.to(torch.int64)
    rank = rank + nearest.sum(dim=1, keepdim=True)
    shift = (rank < 0).to(torch.int64) - (rank > d).to(torch.int64)
    nearest = nearest + shift
    rank = rank + shift * (d + 1)
    offset = (elevated - nearest.to(points.dtype) * (d + 1)) / (d + 1)
    bary = torch.zeros(num_points, d + 2, dtype=points.dtype, device=points.device)
    bary.scatter_add_(1, d - rank, offset)
    bary.scatter_add_(1, d + 1 - rank, -offset)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return nearest, rank, bary[:, : d + 1].contiguous(), bounds


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
        nearest, rank, bary, bounds = enclosing_simplices(points)

        permutations = (d + 1) ** d  # rank rows, encoded by their first d entries
        layout = KeyLayout.from_range(
            [b - 1 for b in bounds[:d]], [b + 1 for b in bounds[d:]], batch_size, permutations
        )  # one more step each way for the rank fix
        low = torch.tensor(layout.low, dtype=torch.int64, device=device)
        strides = torch.tensor(layout.strides, dtype=torch.int64, device=device)
        batch_index = torch.arange(num_points, device=device) // points_per_batch
        cell_key = ((nearest[:, :d] - low) * strides).sum(dim=1) + batch_index * layout.cells

        # One stable sort of the points by simplex groups the points that share all vertices.
        rank_weights = torch.tensor([(d + 1) ** i for i in range(d)], device=device)
        simplex_key = cell_key * permutations + (rank[:, :d] * rank_weights).sum(dim=1)
        sorted_keys, point_order = torch.sort(simplex_key, stable=True)
        _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
        starts = torch.cumsum(counts, dim=0) - counts
        simplex_of_point = torch.empty_like(point_order)
        simplex_of_point[point_order] = torch.repeat_interleave(counts, output_size=num_points)

        # Vertex keys of each simplex, from one representative point: vertex k has coordinates
        # (d+1) q + k with q = nearest - [rank > d - k].
        first = point_order.index_select(0, starts)  # (U,)
        remainders = torch.arange(d + 1, device=device)
        below = rank.index_select(0, first)[:, None, :d] > (d - remainders)[None, :, None]
        corner_cell = cell_key.index_select(0, first)[:, None] - (below * strides).sum(dim=2)
        vertex_key = corner_cell * (d + 1) + remainders  # (U, d+1)
        vertex_keys, vertex_of_corner = torch.unique(vertex_key, sorted=True, return_inverse=True)
        num_vertices = vertex_keys.shape[0]

        # Slice S^T [P, M]: row p holds the barycentric weights on the vertices of p's simplex.
        entries = num_points * (d + 1)
        vertex_of_entry = vertex_of_corner.index_select(0, simplex_of_point).reshape(-1)
        self._slice = _csr(
            torch.arange(0, entries + 1, d + 1, device=device),
            vertex_of_entry,
            bary.reshape(-1),
            size=(num_points, num_vertices),
        )
        self._vertex_of_entry, self._bary = vertex_of_entry, bary
        self._splat = self._transposed_slice(
            vertex_of_corner, counts, starts, point_order, bary, num_vertices
        )

        # One pass along direction j: out_m = n (v_{f(m)} + v_{g(m)}) + c v_m with f, g the
        # neighbours along j. Mass blurred towards a vertex that no point uses is dropped, as in
        # the classic lattice: an absent neighbour is an entry of weight 0 on the diagonal, so
        # every row has 3 entries and no data-dependent size arises.
        zero_extra, along = layout.neighbor_offsets(d)
        step = torch.where(vertex_keys % (d + 1) == 0, zero_extra, 0)  # (M,)
        along_t = torch.tensor(along, dtype=torch.int64, device=device)
        target = (vertex_keys + step)[None, :] + along_t[:, None]  # (d+1, M)
        position = torch.searchsorted(vertex_keys, target).clamp_max_(num_vertices - 1)
        found = vertex_keys[position] == target  # (d+1, M)
        vertex_index = torch.arange(num_vertices, device=device)
        self_index = vertex_index.expand(d + 1, num_vertices)
        forward = torch.where(found, position, self_index)
        # The predecessor along j: scatter each vertex into its successor's slot (a spare
        # column M takes the writes of vertices without one).
        backward = torch.full((d + 1, num_vertices + 1), -1, dtype=torch.int64, device=device)
        backward.scatter_(1, torch.where(found, position, num_vertices), self_index)
        backward = backward[:, :num_vertices]
        has_backward = backward >= 0
        backward = torch.where(has_backward, backward, self_index)
        self._pass_columns = torch.stack([backward, self_index, forward], dim=2)  # (d+1, M, 3)
        self._pass_present = torch.stack([has_backward, found], dim=2)  # (d+1, M, 2)
        self._pass_rows = torch.arange(0, 3 * num_vertices + 1, 3, device=device)
        self._passes: dict[tuple[float, float], list[Tensor]] = {}
        self._passes_for(self._plan)
        self.num_vertices = num_vertices

    @staticmethod
    def _transposed_slice(
        vertex_of_corner: Tensor,
        counts: Tensor,
        starts: Tensor,
        point_order: Tensor,
        bary: Tensor,
        num_vertices: int,
    ) -> Tensor:
        """Splat S [M, P] as CSR, without sorting the P (d+1) entries: the corners (simplex u,
        vertex k) are sorted by vertex, and each corner expands into the run of its simplex's
        points, which the sort by simplex left contiguous in ``point_order``."""
        d1 = vertex_of_corner.shape[1]
        device = bary.device
        entries = bary.numel()
        corner_vertex = vertex_of_corner.reshape(-1)  # corner u (d+1) + k -> its vertex
        vertex_sorted, corner_order = torch.sort(corner_vertex, stable=True)
        simplex, remainder = corner_order // d1, corner_order % d1
        run = counts.index_select(0, simplex)  # points per sorted corner
        row_counts = torch.zeros(num_vertices, dtype=torch.int64, device=device)
        row_counts.index_add_(0, vertex_sorted, run)
        rows = torch.zeros(num_vertices + 1, dtype=torch.int64, device=device)
        rows[1:] = torch.cumsum(row_counts, dim=0)
        corner_of_entry = torch.repeat_interleave(run, output_size=entries)  # sorted corner
        run_start = torch.cumsum(run, dim=0) - run
        # 1-D gathers with index_select / take: several times faster than indexing on the CPU.
        position = torch.arange(entries, device=device) + (
            starts.index_select(0, simplex) - run_start
        ).index_select(0, corner_of_entry)  # into point_order, by runs
        point = point_order.index_select(0, position)
        # Weights from the points' rows in simplex order (runs: local, not random, access).
        in_order = bary.index_select(0, point_order)  # (P, d+1)
        weight = torch.take(in_order, position * d1 + remainder.index_select(0, corner_of_entry))
        return _csr(rows, point, weight, size=(num_vertices, bary.shape[0]))

    def _passes_for(self, plan: BlurPlan) -> list[Tensor]:
        """The CSR matrices ``[M, M]`` of the passes along each direction, for these weights."""
        key = (plan.center, plan.neighbor)
        if key not in self._passes:
            present = self._pass_present.to(self._bary.dtype) * plan.neighbor  # (d+1, M, 2)
            centre = torch.full_like(present[:, :, :1], plan.center)
            weights = torch.cat([present[:, :, :1], centre, present[:, :, 1:]], dim=2)
            size = (self._pass_columns.shape[1],) * 2
            self._passes[key] = [
                _csr(self._pass_rows, columns.reshape(-1), values.reshape(-1), size=size)
                for columns, values in zip(self._pass_columns, weights, strict=True)
            ]
        return self._passes[key]

    def exact_degrees(self, points: Tensor, samples: Tensor, neighbors: Tensor) -> Tensor:
        """Exact ``sum_q W_pq`` over q in ``neighbors`` for p in ``samples``: [B, S]."""
        grouped = points.reshape(self.batch_size, self.points_per_batch, self.dims)
        grouped = grouped - grouped.mean(dim=1, keepdim=True)  # less cancellation below
        p, q = grouped[:, samples], grouped[:, neighbors]  # (B, S, D), (B, Q, D)
        sq_dist = torch.baddbmm(
            (p * p).sum(2)[:, :, None] + (q * q).sum(2)[:, None, :],
            p,
            q.transpose(1, 2),
            alpha=-2.0,
        )  # (B, S, Q)
        # Clamped before exp (no underflow into subnormals, measured 30x slower there); the same
        # cut-off as the numba backend, so both calibrate to the same scale.
        kernel = torch.exp(sq_dist.clamp(0.0, NEGLIGIBLE_SQ_DISTANCE) * -0.5)
        return torch.where(sq_dist < NEGLIGIBLE_SQ_DISTANCE, kernel, 0.0).sum(dim=2)

    def lattice_degrees(self, samples: Tensor) -> Tensor:
        """``(S^T B S 1)_p`` for p in ``samples`` of every batch element: [B, S]."""
        ones = self._bary.new_ones(self._bary.shape[0], 1)
        lattice = self._blur(torch.sparse.mm(self._splat, ones), self._plan)  # (M, 1)
        offsets = torch.arange(self.batch_size, device=samples.device) * self.points_per_batch
        points = (offsets[:, None] + samples[None, :]).reshape(-1)  # (B S,)
        d1 = self.dims + 1
        vertices = self._vertex_of_entry.view(-1, d1)[points]  # (B S, d+1)
        degree = (lattice[vertices, 0] * self._bary[points]).sum(dim=1)
        return degree.reshape(self.batch_size, -1)

    def _blur(self, lattice_values: Tensor, plan: BlurPlan) -> Tensor:
        passes = self._passes_for(plan)
        for j in plan.directions:
            lattice_values = torch.sparse.mm(passes[j], lattice_values)
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
        point_major = values.new_empty(batch, n, channels)  # the layout of the CSR products
        if in_weight is None:
            point_major.copy_(values.transpose(1, 2))
        else:
            torch.mul(values.transpose(1, 2), in_weight[:, :, None], out=point_major)
        lattice = torch.sparse.mm(self._splat, point_major.view(batch * n, channels))  # (M, C)
        lattice = self._blur(lattice, self._plan.transposed() if transpose else self._plan)
        result = torch.sparse.mm(self._slice, lattice).view(batch, n, channels).transpose(1, 2)
        factor = scale.to(values.dtype)[:, None, None]  # (B, 1, 1)
        if out_weight is not None:
            factor = factor * out_weight[:, None, :]  # (B, 1, N)
        if out is None:
            return torch.mul(result, factor, out=values.new_empty(batch, channels, n))
        if accumulate:
            return out.addcmul_(result, factor)
        return torch.mul(result, factor, out=out)
