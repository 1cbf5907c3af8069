r"""The contrast-sensitive grid affinity (GrabCut's pairwise term, the paper's grid Potts) on
NumPy arrays of any number of spatial dims.

Every point is joined to its :math:`3^d - 1` neighbours (8 in 2D, 26 in 3D) with

.. math::
    w_{pq} = \frac{\exp(-|I_p - I_q|^2 / 2\bar\sigma^2)}{\lVert p - q\rVert},
    \qquad 2\bar\sigma^2 = \langle |I_p - I_q|^2 \rangle,

the contrast scale adapted to the image as in GrabCut (Rother et al. 2004: :math:`\beta =
(2 \langle |I_p - I_q|^2\rangle)^{-1}`). :class:`GridAffinity` applies :math:`v \mapsto W v`,
the messages of mean field, in a few slicing passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["GridAffinity"]


def _window(offset: Sequence[int], forward: bool) -> tuple[slice, ...]:
    """Slices selecting the points p (``forward``) or p + offset that have a partner."""
    out = []
    for o in offset:
        if o == 0:
            out.append(slice(None))
        elif (o > 0) == forward:
            out.append(slice(None, -abs(o)))
        else:
            out.append(slice(abs(o), None))
    return tuple(out)


class GridAffinity:
    """``W v`` for the contrast-sensitive neighbour graph of ``image [C, *spatial]``.

    Args:
        image: float intensities ``[C, *spatial]``.
        spacing: physical step along each axis (distances between neighbours; default 1).

    Example:
        >>> image = np.zeros((1, 4, 4), np.float32); image[:, :, 2:] = 100
        >>> w = GridAffinity(image)
        >>> w(np.ones((1, 16), np.float32)).reshape(4, 4)[0, 0] > 2  # 3 same-side neighbours
        np.True_
    """

    def __init__(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> None:
        spatial = image.shape[1:]
        self.spatial = spatial
        spacing = [1.0] * len(spatial) if spacing is None else list(spacing)
        # Half of the offsets: each pair once, used in both directions.
        offsets = [
            o for o in itertools.product((-1, 0, 1), repeat=len(spatial)) if o > (0,) * len(o)
        ]
        differences = []
        for offset in offsets:
            a = image[(slice(None), *_window(offset, True))]
            b = image[(slice(None), *_window(offset, False))]
            differences.append(((a - b) ** 2).sum(axis=0))
        mean = sum(float(d.sum()) for d in differences) / max(1, sum(d.size for d in differences))
        beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
        self.pairs = []
        for offset, difference in zip(offsets, differences, strict=True):
            distance = float(
                np.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing, strict=True)))
            )
            weight = (np.exp(-beta * difference) / distance).astype(np.float32)
            self.pairs.append((_window(offset, True), _window(offset, False), weight))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``W v`` for ``values [C, N]`` (N = the points of ``spatial``); returns ``[C, N]``."""
        grid = values.reshape(values.shape[0], *self.spatial)
        out = np.zeros_like(grid)
        for here, there, weight in self.pairs:
            out[(slice(None), *here)] += weight * grid[(slice(None), *there)]
            out[(slice(None), *there)] += weight * grid[(slice(None), *here)]
        return out.reshape(values.shape)
