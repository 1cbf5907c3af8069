"""The pure-PyTorch lattice backend: runs on every device, the reference for the others.

Construction sorts integer keys instead of hashing: every point names the d + 1 vertices of its
simplex by an int64 key, and one stable sort of these P (d + 1) keys numbers the vertices and
lists, vertex by vertex, the points that splat onto it. Splat, every blur pass and slice are then
one CSR sparse-dense product each, so that filtering C channels is 2 (d + 1) + 4 operations
(kernel launches on a GPU) whatever C: a transposing copy in, the splat ``S``, the ``2 (d + 1)``
passes, the slice ``S^T``, and one scaling product that writes the channel-major result.

A build is about 160 operations and one host synchronization, where the vertex count comes
back (it sizes the lattice) together with the checks that the features are finite and that
their keys fit in int64; a refined lattice (``accuracy`` >= 1) adds one per ring of vertices.
The key layout is computed on the device from the points' bounds, and the constants (elevation
matrix) are made once per device and kept.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg.filtering._lattice_geometry import (
    ACCURACY_LEVELS,
    NEGLIGIBLE_SQ_DISTANCE,
    BlurPlan,
    Refinement,
    check_key_range,
    elevation_matrix,
)


def _csr(rows: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix built from indices that are valid by construction (no invariant check)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, cols, values, size=size, check_invariants=False)


@functools.lru_cache(maxsize=16)
def _elevation(d: int, dtype: torch.dtype, device: torch.device, scale: float) -> Tensor:
    """The elevation matrix ``E [d+1, d]`` at lattice ``scale``, copied to ``device`` once
    (each copy of host data to a GPU synchronizes it); never written to."""
    return elevation_matrix(d, dtype, device, scale)


@functools.lru_cache(maxsize=16)
def _before(d1: int, device: torch.device) -> Tensor:
    """``[d1, d1]`` bool, true where j < i (column j, row i); made once per device."""
    return torch.ones(d1, d1, dtype=torch.bool, device=device).tril(-1)


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
        return torch.where(_before(d1, offset.device), theirs >= mine, theirs > mine).sum(dim=2)
    rank = torch.zeros(offset.shape, dtype=torch.uint8, device=offset.device)
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = offset[:, i] < offset[:, j]
            rank[:, i] += smaller
            rank[:, j] += ~smaller
    return rank.to(torch.int64)


def enclosing_simplices(
    points: Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nearest remainder-0 point, rank and barycentric weights of each point's simplex.

    Args:
        points: Tensor[P, d], features already divided by their bandwidths.
        scale: the lattice scale (see :class:`Refinement`).

    Returns:
        ``nearest`` int64 [P, d+1] (coordinates / (d+1)), ``rank`` int64 [P, d+1] in 0..d,
        ``bary`` [P, d+1] (weight of the vertex of remainder k, rows sum to 1), and the bounds
        ``[2, d]`` (minimum, maximum) of ``nearest``'s first d coordinates before the rank fix,
        in the points' dtype on their device: not finite if and only if some point is not
        (NaN and inf propagate into them), and where they are not, the other results are
        meaningless.
    """
    num_points, d = points.shape
    elevated = points @ _elevation(d, points.dtype, points.device, scale).T  # (P, d+1)
    scaled = elevated / (d + 1)
    up, down = torch.ceil(scaled), torch.floor(scaled)
    nearest = torch.where(up * (d + 1) - elevated < elevated - down * (d + 1), up, down)
    rank = descending_rank(elevated - nearest * (d + 1))
    bounds = torch.stack(torch.aminmax(nearest[:, :d], dim=0))  # (2, d)
    # The rounded point need not lie on sum(x) = 0: move the coordinates of extreme rank (by
    # one step at most, which the key layout's margins absorb): a coordinate whose rank plus
    # that sum falls below 0 moves up (its rank wraps around to the top), above d down. The
    # remainder also keeps the ranks of non-finite points (rejected after the build's
    # synchronization) in range.
    nearest = nearest.to(torch.int64)
    rank = rank + nearest.sum(dim=1, keepdim=True)
    nearest = nearest - torch.div(rank, d + 1, rounding_mode="floor")
    rank = rank.remainder_(d + 1)
    offset = (elevated - nearest.to(points.dtype) * (d + 1)) / (d + 1)
    bary = torch.zeros(num_points, d + 2, dtype=points.dtype, device=points.device)
    bary.scatter_add_(1, d - rank, offset)
    bary.scatter_add_(1, d + 1 - rank, -offset)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return nearest, rank, bary[:, : d + 1].contiguous(), bounds


def _key_layout(bounds: Tensor, margin: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The mixed-radix layout of vertex keys (as :class:`KeyLayout`), on the device: ``low``
    and ``strides`` [d], the number of cells per batch element, and that number in float64
    (exact or overflowing int64, it tells whether the keys fit). Each coordinate of q spans
    ``[min - 3 - margin, max + 2 + margin]``: two steps below and one above the range of
    ``nearest`` for the simplex vertices and their neighbours, one more each way for the rank
    fix, and ``margin`` more for the rings of a :class:`Refinement`."""
    low = bounds[0].to(torch.int64) - (3 + margin)
    ranges = bounds[1].to(torch.int64) + (3 + margin) - low  # (d,)
    products = torch.cumprod(ranges, dim=0)
    strides = F.pad(products[:-1], (1, 0), value=1)
    return low, strides, products[-1], bounds.double().diff(dim=0).add(6 + 2 * margin).prod()


class TorchLatticeOps:
    """Splat, blur and slice matrices for ``points [P, d]`` (P = batch_size x points_per_batch).

    ``apply(values [B, C, N]) -> [B, C, N]`` computes ``S^T B^T B S v`` (unscaled).
    """

    def __init__(
        self,
        points: Tensor,
        batch_size: int,
        points_per_batch: int,
        symmetric: bool = True,
        refinement: Refinement = ACCURACY_LEVELS[0],
    ) -> None:
        d, device = points.shape[1], points.device
        d1 = d + 1
        self._plan = BlurPlan.for_dims(d, symmetric, refinement.scale)
        num_points = points.shape[0]
        entries = num_points * d1
        self.dims, self.batch_size, self.points_per_batch = d, batch_size, points_per_batch
        nearest, rank, bary, bounds = enclosing_simplices(points, refinement.scale)
        low, strides, cells, exact_cells = _key_layout(bounds, refinement.rings)

        # Vertex k of a point's simplex has coordinates (d+1) q + k with q = nearest - [rank >
        # d - k] over the first d coordinates: going from vertex k - 1 to k drops the coordinate
        # of rank d + 1 - k (the last coordinate, implied by sum = 0, has no stride).
        batch_index = torch.arange(num_points, device=device) // points_per_batch
        cell_key = ((nearest[:, :d] - low) * strides).sum(dim=1) + batch_index * cells
        stride_of_rank = torch.zeros_like(rank).scatter_(
            1, rank, F.pad(strides, (0, 1)).expand(num_points, d1)
        )  # (P, d+1)
        dropped = F.pad(stride_of_rank.flip(1)[:, :d].cumsum(dim=1), (1, 0))  # (P, d+1)
        entry_key = (cell_key[:, None] - dropped) * d1 + torch.arange(d1, device=device)

        # One stable sort numbers the vertices (in key order) and groups, for the splat, the
        # entries of each vertex in point order.
        sorted_keys, order = torch.sort(entry_key.reshape(-1), stable=True)
        vertex_sorted = torch.zeros_like(sorted_keys)
        torch.cumsum(sorted_keys[1:] != sorted_keys[:-1], dim=0, out=vertex_sorted[1:])
        # The build's one synchronization: the vertex count, with the input checks.
        count, finite, exact_cells = torch.stack(
            [vertex_sorted[-1].double() + 1, bounds.isfinite().all().double(), exact_cells]
        ).tolist()
        if not finite:
            bad = int((~torch.isfinite(points)).sum())
            raise ValueError(f"features contains {bad} non-finite values (NaN or inf)")
        check_key_range(exact_cells, d1 * batch_size, d)
        num_vertices = int(count)
        rows = torch.searchsorted(vertex_sorted, torch.arange(num_vertices + 1, device=device))
        vertex_keys = sorted_keys.index_select(0, rows[:-1])  # (M,) ascending

        # Neighbour keys along each direction j, as KeyLayout.neighbor_offsets gives them: a
        # step from remainder k >= 1 leads to k - 1, from remainder 0 to d.
        along = F.pad(strides * d1 - 1, (0, 1), value=-1)  # (d+1,)
        zero_extra = d1 - strides.sum() * d1
        if refinement.rings:
            # Rings of vertices without points (one data-dependent size each): renumber.
            occupied = vertex_keys
            for _ in range(refinement.rings):
                remainder = vertex_keys % d1
                ahead = vertex_keys + torch.where(remainder == 0, zero_extra, 0)
                behind = vertex_keys - torch.where(remainder == d, zero_extra, 0)
                vertex_keys = torch.unique(
                    torch.cat(
                        [
                            vertex_keys[None, :],
                            ahead[None, :] + along[:, None],
                            behind[None, :] - along[:, None],
                        ]
                    )
                )
            renumber = torch.searchsorted(vertex_keys, occupied)
            vertex_sorted = renumber.index_select(0, vertex_sorted)
            num_vertices = vertex_keys.shape[0]
            rows = torch.searchsorted(vertex_sorted, torch.arange(num_vertices + 1, device=device))

        vertex_of_entry = torch.empty_like(order).scatter_(0, order, vertex_sorted)
        weights = bary.reshape(-1)
        self._splat = _csr(
            rows, order // d1, weights.index_select(0, order), size=(num_vertices, num_points)
        )
        # Slice S^T [P, M]: row p holds the barycentric weights on the vertices of p's simplex.
        self._slice = _csr(
            torch.arange(0, entries + 1, d1, device=device),
            vertex_of_entry,
            weights,
            size=(num_points, num_vertices),
        )
        self._vertex_of_entry, self._bary = vertex_of_entry, bary

        # One pass along direction j: out_m = n (v_{f(m)} + v_{g(m)}) + c v_m with f, g the
        # neighbours along j. Mass blurred towards a vertex that no point uses is dropped, as in
        # the classic lattice: an absent neighbour is an entry of weight 0 on the diagonal, so
        # every row has 3 entries and no data-dependent size arises.
        step = torch.where(vertex_keys % d1 == 0, zero_extra, 0)  # (M,)
        target = (vertex_keys + step)[None, :] + along[:, None]  # (d+1, M)
        position = torch.searchsorted(vertex_keys, target).clamp_max_(num_vertices - 1)
        found = vertex_keys[position] == target  # (d+1, M)
        vertex_index = torch.arange(num_vertices, device=device)
        self_index = vertex_index.expand(d1, num_vertices)
        forward = torch.where(found, position, self_index)
        # The predecessor along j: scatter each vertex into its successor's slot (a spare
        # column M takes the writes of vertices without one).
        backward = torch.full((d1, num_vertices + 1), -1, dtype=torch.int64, device=device)
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
