r"""Segmentation of one image (or volume) from its scribbles: appearance models + dense CRF.

The energy over labels :math:`x_p \in \{0..K-1\}`, scribbled pixels fixed to their class,

.. math::
    E(x) = \sum_p \Big[ -\alpha \log p_{x_p}(I_p) + \beta_{x_p} d_{x_p}(p) \Big]
         + w \sum_{p, q} \tilde W_{pq} [x_p \neq x_q],
    \qquad W_{pq} = \exp\Big(-\frac{|p - q|^2}{2\sigma_{xy}^2}
                            - \frac{|I_p - I_q|^2}{2\sigma_{rgb}^2}\Big),

has three terms:

- appearance: :math:`p_k` is class k's intensity / colour density (a smoothed histogram,
  :class:`~weakseg.interactive.appearance.HistogramModels`), learned from the scribbles and
  re-learned from the current segmentation in a few outer iterations, as in GrabCut
  (Rother et al. 2004) and the kernel-cut papers (Tang et al. 2016);
- locality: :math:`d_k(p)` is the Euclidean distance from p to the nearest scribble of class
  k (:func:`~weakseg.interactive.distance.class_distances`), so that a lookalike region far
  from every scribble of a class is not given to it by colour alone (GrabCut gets the same
  from its bounding box);
- the dense CRF (Potts) regularizer of the paper's eq. (4) with the bilateral Gaussian
  affinity, its kernel normalized by the degree, :math:`\tilde W = D^{-1} W`.

It is minimized by mean field (Krähenbühl & Koltun 2011): parallel updates
:math:`Q_p \leftarrow \mathrm{softmax}(-U_p + w\, (\tilde W Q)_p)`, one filtering of the K
channels of Q on the permutohedral lattice of :mod:`weakseg.filtering` per update, the lattice
built once per level. Coarse to fine: the outer iterations (mean field, then re-estimation of
the appearance from Q) run on a grid downsampled by an integer factor to about
``coarse_pixels`` points; Q is then upsampled linearly and refined by a few updates at full
resolution.

The annotation loop: :class:`InteractiveSegmenter` keeps the lattices, the last Q and the
distance maps, so that a round of new strokes costs a fraction of a first call
(:meth:`InteractiveSegmenter.refine`). A one-shot process cannot keep them: with
``previous`` (the labels of the last result), :func:`segment_image` skips the coarse stage,
learns the appearance from the new scribbles, then from the corrected labels, and starts the
full-resolution updates from the previous labels.

Everything here is NumPy (and numba through the lattice and the distance transform): no
PyTorch import, which costs ~2 s and ~500 MB in a one-shot command.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weakseg.errors import DataError
from weakseg.interactive._lattice import gaussian_filter
from weakseg.interactive.appearance import HistogramModels
from weakseg.interactive.distance import BlockedDistances, class_distances
from weakseg.interactive.grid import GridAffinity
from weakseg.interactive.resample import (
    downsample_labels,
    downsample_mean,
    upsample_linear,
)

__all__ = ["InteractiveSegmenter", "check_scribbles", "segment_image"]

# The logit of a class that has no scribble: it never wins.
_ABSENT = -1e4
# Previous labels enter the first Q with this confidence.
_PREVIOUS_CONFIDENCE = 0.8
# Share of the scribbles (against the current region) in a re-estimated colour model.
_SCRIBBLE_SHARE = 0.5
# Smallest length scale of a class's distance term (physical units).
_MIN_EXTENT = 4.0
# Cost (logits) beyond the largest reachable one for a point no path reaches from a class.
_UNREACHABLE_COST = 10.0


def _to_numpy(name: str, value: Any) -> np.ndarray:
    """NumPy view of an array or a (CPU or device) torch tensor, without importing torch."""
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
        )
    return value


def _like(result: np.ndarray, original: Any) -> Any:
    """``result`` as a tensor on the device of ``original`` when that was a tensor."""
    if type(original).__module__.startswith("torch"):
        torch = sys.modules["torch"]
        return torch.from_numpy(result).to(original.device)
    return result


def check_scribbles(
    scribbles: np.ndarray,
    num_classes: int | None,
    *,
    ignore_index: int = 255,
    source: str = "scribbles",
) -> int:
    """Check scribbles before any work and return K.

    ``scribbles`` must hold at least one labeled pixel of at least two classes, all ids
    below ``num_classes`` (K, by default the largest id + 1). ``source`` names the file or
    argument in the messages.

    Raises:
        DataError: naming ``source`` and the offending value.
    """
    if scribbles.dtype.kind not in "iu":
        raise DataError(f"{source} must hold integer class ids, got dtype {scribbles.dtype}")
    labeled = scribbles != ignore_index
    if not labeled.any():
        raise DataError(
            f"{source} has no scribble: every pixel is {ignore_index} (unlabeled)",
            "draw at least one stroke for each of two classes",
        )
    present = np.unique(scribbles[labeled])
    if present[0] < 0:
        raise DataError(f"{source} holds the negative class id {int(present[0])}")
    if num_classes is None:
        num_classes = int(present[-1]) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if int(present[-1]) >= num_classes:
        raise DataError(
            f"{source} holds class id {int(present[-1])}, beyond num_classes={num_classes} "
            f"(ids 0..{num_classes - 1}, {ignore_index} = unlabeled)"
        )
    if len(present) < 2:
        raise DataError(
            f"{source} hold only class {int(present[0])}: nothing to separate",
            "scribble at least two classes (e.g. background 0 and an object 1)",
        )
    return num_classes


def _features(
    image: np.ndarray,
    factor: int,
    spacing: Sequence[float],
    sigma_xy: float,
    sigma_rgb: float,
) -> np.ndarray:
    """``[D, N]`` float32: positions (centres of the blocks, in physical units) / sigma_xy, then
    intensities / sigma_rgb, for ``image [C, *spatial]`` on a grid coarsened by ``factor``."""
    spatial = image.shape[1:]
    n = math.prod(spatial)
    features = np.empty((len(spatial) + image.shape[0], n), np.float32)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in spatial], indexing="ij")
    for axis, grid in enumerate(grids):
        scale = factor * spacing[axis] / sigma_xy
        features[axis] = ((grid + (factor - 1) / (2.0 * factor)) * scale).reshape(-1)
    features[len(spatial) :] = image.reshape(image.shape[0], n) / sigma_rgb
    return features


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of ``[K, N]``, in place."""
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def _mean_field(
    unary: np.ndarray,
    q: np.ndarray,
    filt,
    degree: np.ndarray,
    weight: float,
    grid: GridAffinity,
    grid_weight: float,
    clamp: tuple[np.ndarray, np.ndarray],
    n_iter: int,
) -> np.ndarray:
    """``n_iter`` updates ``Q <- softmax(logits + w D^-1 W Q + w_g G Q)`` with the scribbles
    clamped. ``unary`` are the logits ``[K, N]`` (minus the unary cost), ``q [K, N]`` the start."""
    labeled, onehot = clamp
    scale = weight / degree  # (N,)
    for _ in range(n_iter):
        logits = filt(q)
        logits *= scale
        logits += unary
        if grid_weight > 0:
            logits += grid_weight * grid(q)
        q = _softmax(logits)
        q[:, labeled] = onehot
    return q


def _unary(
    models: HistogramModels,
    distances: np.ndarray,
    present: np.ndarray,
    appearance_weight: float,
    distance_weight: np.ndarray,
) -> np.ndarray:
    """``alpha log p_k(I_p) - beta_k d_k(p)`` ``[K, N]`` (``distance_weight`` = beta ``[K]``);
    absent classes never win."""
    logits = appearance_weight * models.log_likelihood()
    unreachable = np.isinf(distances)
    cost = distance_weight[:, None] * np.where(unreachable, 0.0, distances)  # (0*inf = NaN)
    if unreachable.any():
        finite = cost[~unreachable]
        cost[unreachable] = (finite.max() if finite.size else 0.0) + _UNREACHABLE_COST
    logits -= cost
    logits[~present] = _ABSENT
    return logits


def _scribble_extents(
    labels: np.ndarray, num_classes: int, spacing: Sequence[float], ignore_index: int
) -> np.ndarray:
    """Each class's scribble size ``[K]``: the RMS distance of its scribbled points to their
    centroid (physical units, at least 4), the length scale of its distance term."""
    extents = np.full(num_classes, _MIN_EXTENT)
    coords = np.nonzero(labels != ignore_index)
    ids = labels[coords]
    points = np.stack(coords, axis=1).astype(np.float64) * np.asarray(spacing)  # (M, d)
    for k in range(num_classes):
        mine = points[ids == k]
        if len(mine):
            rms = float(np.sqrt(((mine - mine.mean(axis=0)) ** 2).sum(axis=1).mean()))
            extents[k] = max(rms, _MIN_EXTENT)
    return extents.astype(np.float32)


def _overlaps(density: np.ndarray, present: np.ndarray) -> np.ndarray:
    r"""Each class's largest Bhattacharyya coefficient with another scribbled class ``[K]``:
    :math:`\max_{j \neq k} \sum_b \sqrt{p_k(b)\, p_j(b)}` in [0, 1] (1 = the same colours),
    for the colour densities ``density [K, bins]``."""
    root = np.sqrt(density)  # (K, bins)
    coefficients = root @ root.T
    coefficients[~present] = 0.0
    coefficients[:, ~present] = 0.0
    np.fill_diagonal(coefficients, 0.0)
    return coefficients.max(axis=1)


def _fit_weights(q: np.ndarray, onehot_full: np.ndarray) -> np.ndarray:
    """Colour-model weights ``[K, N]``: each class's scribbles (share ``_SCRIBBLE_SHARE``)
    and its soft region in Q, each normalized to sum 1."""
    scribbled = onehot_full / np.maximum(onehot_full.sum(axis=1, keepdims=True), 1.0)
    region = q / np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
    return _SCRIBBLE_SHARE * scribbled + (1 - _SCRIBBLE_SHARE) * region


@dataclass
class _Level:
    """What the grid coarsened by ``factor`` holds for the image alone: its intensities
    ``[C, *small]``, the lattice filter and the degrees of the dense CRF, the grid affinity
    and the pixels' histogram bins."""

    factor: int
    image: np.ndarray
    filt: Callable[[np.ndarray], np.ndarray]
    degree: np.ndarray
    grid: GridAffinity
    models: HistogramModels


@dataclass
class _Scribbles:
    """What the scribbles ``labels [*spatial]`` (int64) give at full resolution: the scribbled
    classes ``present [K]``, the clamp ``(labeled [N], onehot [K, M])`` and its full one-hot
    ``[K, N]``, each class's scribble size ``[K]``, the blurred colour counts of the scribbles
    ``smoothed [K, bins]`` (float64) and the weights scaled by their overlap."""

    labels: np.ndarray
    present: np.ndarray
    clamp: tuple[np.ndarray, np.ndarray]
    onehot: np.ndarray
    extents: np.ndarray
    smoothed: np.ndarray
    weight: float
    betas: np.ndarray


@dataclass
class _Result:
    """The last result of an :class:`InteractiveSegmenter`: its scribbles' terms, Q
    ``[K, N]``, and the distance maps of the full and the coarse grid."""

    terms: _Scribbles
    q: np.ndarray
    distances: BlockedDistances
    coarse_distances: BlockedDistances


class InteractiveSegmenter:
    r"""The annotation loop on one image or volume: :meth:`segment` from scribbles, then
    :meth:`refine` after each round of strokes, at a fraction of a first call's cost.

    What depends on the image alone is built once, on first use: the lattices and degrees of
    the coarse and the full grid, the grid affinities, the pixels' histogram bins. The last
    result keeps its Q and its distance maps. :meth:`refine`:

    1. updates the distance maps where the edit changes them
       (:class:`~weakseg.interactive.distance.BlockedDistances`: the values of a
       recomputation);
    2. releases the labels that a new stroke contradicts: where a stroke of class k covers
       pixels of the last result's class j, Q is reset to uniform on the class-j pixels within
       ``sigma_xy`` of it (started from a confident Q, mean field would keep the old region:
       its own dense-CRF messages outweigh the new unary);
    3. re-learns the colours from that Q and the scribbles, runs one coarse outer iteration
       (``n_iter`` updates from that Q, then the colours re-learned), and ``n_refine``
       updates at full resolution from the upsampled Q.

    No lattice is built and the first call's other coarse iterations are skipped.

    Args:
        image: ``[C, *spatial]`` float intensities in 0-255 (see :func:`segment_image`).
        num_classes: K (default: the largest id of the scribbles of :meth:`segment` + 1);
            :meth:`refine` keeps the K of the last result.
        n_refine: mean-field updates of :meth:`refine` at full resolution.
        spacing, sigma_xy, ...: the method's parameters, as in :func:`segment_image`.

    Example:
        >>> image = np.zeros((1, 20, 20), np.float32); image[:, :, 10:] = 200
        >>> scribbles = np.full((20, 20), 255); scribbles[5, 2] = 0; scribbles[14, 12] = 1
        >>> segmenter = InteractiveSegmenter(image)
        >>> labels = segmenter.segment(scribbles)
        >>> scribbles[2:18, 16] = 1  # one more stroke
        >>> labels = segmenter.refine(scribbles)
        >>> bool((labels[:, :10] == 0).all()), bool((labels[:, 10:] == 1).all())
        (True, True)
    """

    def __init__(
        self,
        image: Any,
        *,
        num_classes: int | None = None,
        spacing: Sequence[float] | None = None,
        sigma_xy: float = 40.0,
        sigma_rgb: float = 13.0,
        weight: float = 2.5,
        grid_weight: float = 2.0,
        appearance_weight: float = 1.0,
        distance_weight: float = 0.3,
        distance_overlap: float = 6.0,
        weight_overlap: float = 1.2,
        n_outer: int = 3,
        n_iter: int = 8,
        n_fine: int = 3,
        n_refine: int = 2,
        coarse_pixels: int = 25_000,
        background: int | None = 0,
        hist_sigma: float = 4.0,
        hist_bins: int | None = None,
        ignore_index: int = 255,
    ) -> None:
        self._original = image
        image = np.asarray(_to_numpy("image", image), dtype=np.float32)
        if image.ndim < 2:
            raise DataError(f"image must be [C, *spatial], got shape {image.shape}")
        if not np.isfinite(image).all():
            raise DataError("image holds NaN or infinite values")
        spatial = image.shape[1:]
        spacing = [1.0] * len(spatial) if spacing is None else [float(s) for s in spacing]
        if len(spacing) != len(spatial) or min(spacing) <= 0:
            raise DataError(f"spacing must be {len(spatial)} numbers > 0, got {spacing}")
        for name, value in [("sigma_xy", sigma_xy), ("sigma_rgb", sigma_rgb)]:
            if not value > 0:
                raise DataError(f"{name} must be > 0, got {value!r}")
        self.image, self.spatial, self.spacing = image, spatial, spacing
        self.num_classes = num_classes
        self.sigma_xy, self.sigma_rgb = sigma_xy, sigma_rgb
        self.weight, self.grid_weight = weight, grid_weight
        self.appearance_weight, self.distance_weight = appearance_weight, distance_weight
        self.distance_overlap, self.weight_overlap = distance_overlap, weight_overlap
        self.n_outer, self.n_iter, self.n_fine, self.n_refine = n_outer, n_iter, n_fine, n_refine
        self.coarse_pixels, self.background = coarse_pixels, background
        self.hist_sigma, self.hist_bins = hist_sigma, hist_bins
        self.ignore_index = ignore_index
        n_full = math.prod(spatial)
        self._factor = max(1, math.ceil((n_full / coarse_pixels) ** (1.0 / len(spatial))))
        self._levels: dict[int, _Level] = {}
        self._last: _Result | None = None

    def __repr__(self) -> str:
        last = "none" if self._last is None else f"{self._last.q.shape[0]} classes"
        return (
            f"{type(self).__name__}(image={tuple(self.image.shape)}, spacing={self.spacing}, "
            f"last result: {last})"
        )

    def segment(self, scribbles: Any, *, return_probs: bool = False) -> Any:
        """Segment from ``scribbles [*spatial]`` from scratch, as :func:`segment_image`
        (coarse to fine); the result is the start of the next :meth:`refine`.

        Returns:
            ``[*spatial]`` int64 labels (scribbled pixels keep theirs), or Q ``[K, *spatial]``
            float32 with ``return_probs``; a tensor on the device of the image when the image
            was a tensor.

        Raises:
            DataError: bad scribbles (see :func:`check_scribbles`) or another shape.
        """
        scribbles = self._checked(scribbles)
        num_classes = check_scribbles(scribbles, self.num_classes, ignore_index=self.ignore_index)
        terms = self._scribble_terms(scribbles, num_classes)
        distances = self._distances(terms.labels, num_classes, 1)
        coarse_distances = self._distances(terms.labels, num_classes, self._factor)
        first = terms.onehot
        if self.background is not None and self.background < num_classes:
            # GrabCut's start: the background's colours include every unlabeled pixel.
            first = terms.onehot.copy()
            first[self.background] = ~terms.clamp[0]
        self._level(1).models.fit(_fit_weights(first, terms.onehot))
        q = self._coarse_stage(terms, coarse_distances, None, self.n_outer)
        q = self._fine_stage(q, terms, distances, [self.n_fine])
        self._last = _Result(terms, q, distances, coarse_distances)
        return self._output(q, terms, return_probs)

    def refine(self, scribbles: Any, *, return_probs: bool = False) -> Any:
        """Segment from the edited ``scribbles [*spatial]`` (strokes added, or erased),
        starting from the last result (see the class notes).

        Returns:
            As :meth:`segment`.

        Raises:
            DataError: no earlier result, or bad scribbles (another shape, a class id beyond
                the last result's K, fewer than two classes scribbled).
        """
        if self._last is None:
            raise DataError("refine needs an earlier result", "call segment(scribbles) first")
        num_classes = self._last.q.shape[0]
        scribbles = self._checked(scribbles)
        check_scribbles(scribbles, num_classes, ignore_index=self.ignore_index)
        last = self._last
        terms = self._scribble_terms(scribbles, num_classes, last.terms)
        q = self._released(last, terms)
        for factor, maps in [(1, last.distances), (self._factor, last.coarse_distances)]:
            small = downsample_labels(terms.labels, factor, num_classes, self.ignore_index)
            maps.update(small)
        self._level(1).models.fit(_fit_weights(q, terms.onehot))
        q = self._coarse_stage(terms, last.coarse_distances, q, 1, relearn=False)
        q = self._fine_stage(q, terms, last.distances, [self.n_refine])
        self._last = _Result(terms, q, last.distances, last.coarse_distances)
        return self._output(q, terms, return_probs)

    def _refine_from_labels(
        self, scribbles: Any, previous: Any, *, return_probs: bool = False
    ) -> Any:
        """``segment_image(previous=...)``, the one-shot command's ``--previous``: Q starts at
        0.8 on the labels ``previous [*spatial]``, with the scribbles' colours for
        ``n_iter // 4`` full-resolution updates, then those re-learned for ``n_fine``."""
        scribbles = self._checked(scribbles)
        num_classes = check_scribbles(scribbles, self.num_classes, ignore_index=self.ignore_index)
        previous = _to_numpy("previous", previous)
        if tuple(previous.shape) != tuple(self.spatial):
            raise DataError(
                f"previous labels of shape {tuple(previous.shape)} do not match image of "
                f"shape {tuple(self.image.shape)}"
            )
        if previous.dtype.kind not in "iu" or previous.min() < 0 or previous.max() >= num_classes:
            raise DataError(
                f"previous labels must be class ids 0..{num_classes - 1}, found "
                f"{previous.min()}..{previous.max()}"
            )
        n_full = math.prod(self.spatial)
        q = np.full((num_classes, n_full), (1 - _PREVIOUS_CONFIDENCE) / num_classes, np.float32)
        q[previous.reshape(-1), np.arange(n_full)] += _PREVIOUS_CONFIDENCE
        # The colour models stay those of the scribbles (_scribble_terms fitted them): the new
        # scribbles correct the previous result, and the next fit takes the corrected regions.
        terms = self._scribble_terms(scribbles, num_classes)
        distances = self._distances(terms.labels, num_classes, 1)
        iters = [max(1, self.n_iter // 4), self.n_fine]
        q = self._fine_stage(q, terms, distances, iters)
        return self._output(q, terms, return_probs)

    def _checked(self, scribbles: Any) -> np.ndarray:
        """Scribbles as a NumPy array of the image's spatial shape."""
        scribbles = _to_numpy("scribbles", scribbles)
        if tuple(scribbles.shape) != tuple(self.spatial):
            raise DataError(
                f"scribbles of shape {tuple(scribbles.shape)} do not match image of shape "
                f"{tuple(self.image.shape)} (expected {tuple(self.spatial)})"
            )
        return scribbles

    def _level(self, factor: int) -> _Level:
        """The image-only parts of the grid coarsened by ``factor``, built once."""
        if factor not in self._levels:
            small = downsample_mean(self.image, factor, len(self.spatial))
            filt = gaussian_filter(
                _features(small, factor, self.spacing, self.sigma_xy, self.sigma_rgb)
            )
            degree = filt(np.ones((1, math.prod(small.shape[1:])), np.float32))[0]
            grid = GridAffinity(small, [s * factor for s in self.spacing])
            models = HistogramModels(
                small.reshape(small.shape[0], -1), sigma=self.hist_sigma, bins=self.hist_bins
            )
            self._levels[factor] = _Level(
                factor, small, filt, np.maximum(degree, 1e-6), grid, models
            )
        return self._levels[factor]

    def _distances(self, labels: np.ndarray, num_classes: int, factor: int) -> BlockedDistances:
        """The distance maps of the scribbles on the grid coarsened by ``factor``."""
        return BlockedDistances(
            downsample_labels(labels, factor, num_classes, self.ignore_index),
            num_classes,
            spacing=[s * factor for s in self.spacing],
            ignore_index=self.ignore_index,
        )

    def _scribble_terms(
        self, scribbles: np.ndarray, num_classes: int, last: _Scribbles | None = None
    ) -> _Scribbles:
        """The full-resolution clamp, the scribble sizes, and the weights scaled by the
        classes' colour overlap. Without ``last``, fits the full grid's colour models to the
        scribbles; with it (the terms of earlier scribbles), updates their blurred colour
        counts by the pixels that changed instead (the same counts, up to rounding)."""
        labels = scribbles.astype(np.int64)
        labeled = (labels != self.ignore_index).reshape(-1)
        ids = labels.reshape(-1)[labeled]
        present = np.zeros(num_classes, bool)
        present[np.unique(ids)] = True
        onehot = np.zeros((num_classes, labeled.size), np.float32)
        onehot[ids, np.flatnonzero(labeled)] = 1.0
        clamp_onehot = np.zeros((num_classes, ids.size), np.float32)
        clamp_onehot[ids, np.arange(ids.size)] = 1.0
        extents = _scribble_extents(labels, num_classes, self.spacing, self.ignore_index)
        models = self._level(1).models
        if last is None:
            density = models.fit(onehot).density
            smoothed = models.smoothed.astype(np.float64)
        else:
            smoothed = last.smoothed.copy()
            before, after = last.labels.reshape(-1), labels.reshape(-1)
            changed = np.flatnonzero(before != after)
            for ids_at, sign in [(before, -1.0), (after, 1.0)]:
                mine = changed[ids_at[changed] != self.ignore_index]
                models.add_pixels(smoothed, mine, ids_at[mine], sign)
            smoothed[~present] = 0.0  # no rounding residue of erased strokes
            density = models.densities(smoothed)
        overlap = _overlaps(density, present)
        weight = self.weight * max(0.0, 1.0 - self.weight_overlap * float(overlap[present].mean()))
        betas = (self.distance_weight * (1.0 + self.distance_overlap * overlap)).astype(np.float32)
        clamp = (labeled, clamp_onehot)
        return _Scribbles(labels, present, clamp, onehot, extents, smoothed, weight, betas)

    def _released(self, last: _Result, terms: _Scribbles) -> np.ndarray:
        """The last Q ``[K, N]`` (a copy), uniform on the pixels of a class j within
        ``sigma_xy`` of a new stroke that covers pixels the last result gave to j."""
        q = last.q.copy()
        current = q.argmax(axis=0)
        labels = terms.labels.reshape(-1)
        new = (labels != self.ignore_index) & (labels != last.terms.labels.reshape(-1))
        corrective = new & (current != labels)
        if not corrective.any():
            return q
        sources = np.where(corrective, 0, self.ignore_index).reshape(self.spatial)
        near = class_distances(
            sources, 1, spacing=self.spacing, ignore_index=self.ignore_index
        ).reshape(-1)
        released = (near <= self.sigma_xy) & np.isin(current, current[corrective])
        q[:, released] = 1.0 / q.shape[0]
        return q

    def _unary(self, models: HistogramModels, distances: np.ndarray, terms: _Scribbles):
        return _unary(models, distances, terms.present, self.appearance_weight, terms.betas)

    def _coarse_stage(
        self,
        terms: _Scribbles,
        maps: BlockedDistances,
        start: np.ndarray | None,
        n_outer: int,
        relearn: bool = True,
    ) -> np.ndarray:
        """``n_outer`` outer iterations on the coarse grid: ``n_iter`` mean-field updates from
        the softmax of the unary (``start`` None) or from ``start [K, N]`` coarsened, then,
        with ``relearn``, the colours re-learned from Q. Returns Q upsampled to full
        resolution ``[K, N]``."""
        num_classes, n_full = terms.onehot.shape
        factor = self._factor
        coarse, fine = self._level(factor), self._level(1)
        small_labels = maps.labels()
        labeled = (small_labels != self.ignore_index).reshape(-1)
        ids = small_labels.reshape(-1)[labeled]
        onehot = np.zeros((num_classes, ids.size), np.float32)
        onehot[ids, np.arange(ids.size)] = 1.0
        distances = maps.values().reshape(num_classes, -1)
        distances /= terms.extents[:, None]  # in units of each class's scribble size
        small_shape = coarse.image.shape[1:]
        q = None
        if start is not None:
            q = downsample_mean(start.reshape(num_classes, *self.spatial), factor, len(small_shape))
            q = np.ascontiguousarray(q.reshape(num_classes, -1), np.float32)
            q[:, labeled] = onehot
        for _ in range(n_outer):
            coarse.models.log_density = fine.models.log_density
            unary = self._unary(coarse.models, distances, terms)
            q = _softmax(unary.copy()) if q is None else q
            q = _mean_field(
                unary, q, coarse.filt, coarse.degree, terms.weight, coarse.grid,
                self.grid_weight, (labeled, onehot), self.n_iter,
            )  # fmt: skip
            if relearn:
                region = upsample_linear(
                    q.reshape(num_classes, *small_shape), self.spatial, factor
                ).reshape(num_classes, -1)
                fine.models.fit(_fit_weights(region, terms.onehot))
        q = upsample_linear(q.reshape(num_classes, *small_shape), self.spatial, factor)
        return np.ascontiguousarray(q.reshape(num_classes, n_full), np.float32)

    def _fine_stage(
        self,
        q: np.ndarray,
        terms: _Scribbles,
        distances: BlockedDistances,
        iters: list[int],
    ) -> np.ndarray:
        """Mean-field updates at full resolution from ``q [K, N]`` (changed in place), the
        colours re-learned from Q and the scribbles before each group of ``iters`` but the
        first, which uses the models as they are."""
        fine = self._level(1)
        scaled = distances.values().reshape(q.shape[0], -1)
        scaled /= terms.extents[:, None]  # in units of each class's scribble size
        q[:, terms.clamp[0]] = terms.clamp[1]
        for i, n_iter in enumerate(iters):
            if i > 0:
                fine.models.fit(_fit_weights(q, terms.onehot))
            unary = self._unary(fine.models, scaled, terms)
            q = _mean_field(
                unary, q, fine.filt, fine.degree, terms.weight, fine.grid, self.grid_weight,
                terms.clamp, n_iter,
            )  # fmt: skip
        return q

    def _output(self, q: np.ndarray, terms: _Scribbles, return_probs: bool) -> Any:
        """Labels (scribbles kept) or Q ``[K, *spatial]``, a tensor where the image was one."""
        if return_probs:
            return _like(q.reshape(q.shape[0], *self.spatial), self._original)
        labels = q.argmax(axis=0).reshape(self.spatial).astype(np.int64)
        labels = np.where(terms.labels != self.ignore_index, terms.labels, labels)
        return _like(labels, self._original)


def segment_image(
    image: Any,
    scribbles: Any,
    *,
    num_classes: int | None = None,
    previous: Any | None = None,
    spacing: Sequence[float] | None = None,
    sigma_xy: float = 40.0,
    sigma_rgb: float = 13.0,
    weight: float = 2.5,
    grid_weight: float = 2.0,
    appearance_weight: float = 1.0,
    distance_weight: float = 0.3,
    distance_overlap: float = 6.0,
    weight_overlap: float = 1.2,
    n_outer: int = 3,
    n_iter: int = 8,
    n_fine: int = 3,
    coarse_pixels: int = 25_000,
    background: int | None = 0,
    hist_sigma: float = 4.0,
    hist_bins: int | None = None,
    ignore_index: int = 255,
    return_probs: bool = False,
) -> Any:
    r"""Segment one image or volume from scribbles: appearance + locality + dense CRF, by
    coarse-to-fine mean field (see the module notes for the energy). One call: for an
    annotation loop, :class:`InteractiveSegmenter` keeps what the next round can reuse.

    Args:
        image: ``[C, *spatial]`` float intensities in 0-255 (C = 1 gray, 3 RGB, or any; 2D
            ``[C, H, W]`` or 3D ``[C, D, H, W]``), a NumPy array or a torch tensor.
        scribbles: ``[*spatial]`` int class ids ``0..K-1``, ``ignore_index`` = unlabeled; at
            least two classes scribbled.
        num_classes: K (default: the largest scribbled id + 1).
        previous: optional ``[*spatial]`` labels of an earlier call (the annotation loop of a
            one-shot command): start from them and skip the coarse stage
            .
        spacing: physical size of a step along each spatial axis (anisotropic volumes); the
            distances and ``sigma_xy`` are in these units (default: pixels).
        sigma_xy, sigma_rgb: bandwidths of the bilateral affinity (pixels / spacing units,
            intensity units).
        weight: :math:`w`, the weight of the dense CRF term (logit units), before the
            ``weight_overlap`` scaling.
        appearance_weight: :math:`\alpha`, the weight of the colour log-likelihoods.
        distance_weight: :math:`\beta_0`, logit cost per scribble size of distance to the
            nearest scribble of the class, before the ``distance_overlap`` scaling.
        distance_overlap, weight_overlap: where the classes' scribbled colours overlap
            (:math:`o_k`, class k's largest Bhattacharyya coefficient with another class,
            0 = disjoint, 1 = the same histogram), colour says little, so locality counts
            more and the bilateral kernel, which joins alike colours, less:
            :math:`\beta_k = \beta_0 (1 + c_d\, o_k)` and :math:`w \leftarrow w \max(0, 1 -
            c_w \bar o)` (:math:`\bar o` the mean over the scribbled classes). Photos have
            :math:`o \approx 0.03-0.3`, ACDC's gray slices 0.3-0.8 (the two blood pools
            share their intensity). Chosen, with ``weight`` and ``distance_weight``, on ACDC
            training slices (every 16th from the 4th, 80) and the photos of
            ``scripts/segment_photos.py``.
        n_outer, n_iter: outer iterations (mean field, then re-learned appearance) and mean-field
            updates in each, on the coarse grid.
        n_fine: mean-field updates at full resolution (with ``previous``: ``n_iter // 4``
            there first, then the appearance re-learned and ``n_fine`` more).
        coarse_pixels: about this many points on the coarse grid (integer downsampling factor).
        background: the class whose first colour model also counts every unlabeled pixel
            (GrabCut's start: colours that no scribble shows go to the background until the
            re-estimations say otherwise); ``None`` for models from the scribbles alone.
        hist_sigma, hist_bins: smoothing of the colour histograms (intensity units) and
            their bins per channel (default 64 up to 3 channels). ``hist_sigma`` was chosen
            on the photos of ``scripts/segment_photos.py`` and ACDC training slices.
        ignore_index: the "unlabeled" id.
        return_probs: return Q ``[K, *spatial]`` float32 instead of the labels.

    Returns:
        ``[*spatial]`` int64 labels (scribbled pixels keep theirs), or Q; a tensor on the
        device of ``image`` when ``image`` was a tensor.

    Raises:
        DataError: bad scribbles (see :func:`check_scribbles`) or shapes that differ.

    Example:
        >>> image = np.zeros((1, 20, 20), np.float32); image[:, :, 10:] = 200
        >>> scribbles = np.full((20, 20), 255); scribbles[5, 2] = 0; scribbles[14, 12] = 1
        >>> labels = segment_image(image, scribbles)
        >>> bool((labels[:, :10] == 0).all()), bool((labels[:, 10:] == 1).all())
        (True, True)
    """
    segmenter = InteractiveSegmenter(
        image,
        num_classes=num_classes,
        spacing=spacing,
        sigma_xy=sigma_xy,
        sigma_rgb=sigma_rgb,
        weight=weight,
        grid_weight=grid_weight,
        appearance_weight=appearance_weight,
        distance_weight=distance_weight,
        distance_overlap=distance_overlap,
        weight_overlap=weight_overlap,
        n_outer=n_outer,
        n_iter=n_iter,
        n_fine=n_fine,
        coarse_pixels=coarse_pixels,
        background=background,
        hist_sigma=hist_sigma,
        hist_bins=hist_bins,
        ignore_index=ignore_index,
    )
    if previous is None:
        return segmenter.segment(scribbles, return_probs=return_probs)
    return segmenter._refine_from_labels(scribbles, previous, return_probs=return_probs)
