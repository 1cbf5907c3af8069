r"""Per-volume (3D) metrics, the protocol of the medical segmentation literature: Dice and the
95th-percentile Hausdorff distance (HD95) per class and volume, then averaged over volumes.

For one class of one volume, with prediction :math:`P` and ground truth :math:`G` (voxel sets,
ignored voxels left out of both):

.. math::
    \mathrm{Dice} = \frac{2 |P \cap G|}{|P| + |G|}, \qquad
    \mathrm{HD95} = \mathrm{P}_{95}\big(\{d(p, \partial G)\}_{p \in \partial P}
                      \cup \{d(g, \partial P)\}_{g \in \partial G}\big)

where :math:`\partial X` is the surface of :math:`X` (voxels of :math:`X` with a face neighbour
outside it, or on the array border) and :math:`d` the Euclidean distance in mm with the voxel
spacing (in voxels when the spacing is unknown: 2D slices stacked from PNGs). This is medpy's
``hd95`` (``connectivity=1``), the reference of WSL4MIS and PyMIC.

Empty sets, stated explicitly since implementations differ:

- :math:`P = G = \emptyset` (the class is absent from the volume and correctly not predicted):
  Dice and HD95 are NaN, left out of every mean (as ``weakseg.engine.metrics`` does per slice).
- exactly one of them empty (a missed or a hallucinated structure): Dice = 0 and HD95 = the
  diagonal of the volume (:math:`\sqrt{\sum_i (n_i s_i)^2}`, the largest distance inside it).
  medpy raises here, MONAI returns NaN and skips it in its means (so a missed structure
  *improves* the mean HD95), WSL4MIS's test scripts return 0; the diagonal makes a miss the
  worst case and keeps means comparable between methods. ``hd95_missed`` in the summary counts
  these volumes per class.

HD95 is computed for the foreground classes only (the background's surface is the
foreground's plus the volume border; no table reports it).

Post-processing (:func:`largest_component`): keep the largest connected component of each
foreground class, the rest becomes background (what PyMIC and WSL4MIS report with).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from weakseg.engine.metrics import ConfusionMatrix
from weakseg.errors import DataError

__all__ = [
    "VolumeAccumulator",
    "VolumeScores",
    "dice_per_class_3d",
    "hd95",
    "largest_component",
    "summarize_volumes",
]


def dice_per_class_3d(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Dice of each class over a whole volume: float64 ``[K]``, NaN for a class absent from
    both.

    Args:
        pred: ``[*]`` predicted class ids.
        target: ``[*]`` (same shape) true class ids; ``ignore_index`` voxels are not counted.
        num_classes: ``K``.
    """
    keep = target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    tp = np.bincount(target[pred == target], minlength=num_classes)[:num_classes]
    sizes = np.bincount(pred, minlength=num_classes)[:num_classes]
    sizes = sizes + np.bincount(target, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2.0 * tp / sizes  # 0/0 = NaN


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """The 95th-percentile symmetric surface distance between two binary masks (see the module
    docstring for the formula and the empty cases).

    Args:
        pred: bool ``[*spatial]`` (2D or 3D).
        target: bool ``[*spatial]``, same shape.
        spacing: voxel size per axis (mm); ``None`` = 1 (distances in voxels).

    Returns:
        HD95 in the units of ``spacing``; NaN when both are empty, the array's diagonal when
        exactly one is.

    Example:
        >>> a = np.zeros((1, 9, 9), bool); a[0, 2:5, 2:5] = True
        >>> hd95(a, np.roll(a, 3, axis=2), spacing=(5.0, 1.0, 2.0))
        6.0
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not fit a {pred.ndim}D mask")
    has_pred, has_target = bool(pred.any()), bool(target.any())
    if not has_pred and not has_target:
        return float("nan")
    if not (has_pred and has_target):
        return math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing, strict=True)))
    # the distances only involve voxels of the union's bounding box (one voxel of margin keeps
    # the erosion, and hence the surfaces, exactly those of the whole array)
    nonzero = np.nonzero(pred | target)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in nonzero)
    pred_surface, target_surface = _surface(pred[box]), _surface(target[box])
    to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    distances = np.concatenate([to_target[pred_surface], to_pred[target_surface]])
    return float(np.percentile(distances, 95))


def largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``labels`` with only the largest connected component (face connectivity) of each class
    ``1..K-1``; the voxels of its other components become background 0.

    >>> largest_component(np.array([[1, 0, 1, 1], [0, 0, 2, 0]]), 3).tolist()
    [[0, 0, 1, 1], [0, 0, 2, 0]]
    """
    out = np.array(labels, copy=True)
    for k in range(1, num_classes):
        components, count = ndimage.label(labels == k)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[(components != 0) & (components != int(sizes.argmax()))] = 0
    return out


@dataclass(frozen=True)
class VolumeScores:
    """The metrics of one volume: Dice and HD95 per class (``[K]``, NaN where undefined)."""

    volume: str
    slices: int
    dice: np.ndarray
    hd95: np.ndarray
    missed: np.ndarray  # bool [K]: exactly one of prediction / ground truth empty
    spacing: tuple[float, float, float] | None


class VolumeAccumulator:
    """Collects the 2D slices of each volume in turn and scores a volume when the next begins.

    Slices must come volume by volume (any order inside a volume); a volume that comes back
    after another began is a :class:`~weakseg.errors.DataError` (sort the split file).
    ``confusion`` accumulates the per-slice confusion matrix of the same (post-processed)
    predictions.

    Args:
        num_classes: ``K``.
        ignore_index: target value of voxels not evaluated.
        lcc: keep the largest connected component per class of each volume before scoring.
        compute_hd95: compute HD95 (the costly part); NaN otherwise.
        background: classes without HD95 (NaN: the surface of the background is that of the
            foreground plus the volume border, and no table reports it).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        *,
        lcc: bool = False,
        compute_hd95: bool = True,
        background: Sequence[int] = (0,),
    ) -> None:
        self.num_classes = int(num_classes)
        self.background = frozenset(int(k) for k in background)
        self.ignore_index = int(ignore_index)
        self.lcc = bool(lcc)
        self.compute_hd95 = bool(compute_hd95)
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.scores: dict[str, VolumeScores] = {}
        self._current: str | None = None
        self._slices: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self._spacing: tuple[float, float, float] | None = None

    def add(
        self,
        volume: str,
        position: int | None,
        pred: np.ndarray,
        target: np.ndarray,
        spacing: Sequence[float] | None = None,
    ) -> None:
        """Add one slice: ``pred`` and ``target`` ``[H, W]`` class ids (padding cropped or
        marked ``ignore_index`` in ``target``), ``position`` its index in the volume (``None``:
        the order of arrival), ``spacing`` the volume's ``(s, h, w)`` in mm or ``None``."""
        if volume != self._current:
            self._flush()
            if volume in self.scores:
                raise DataError(
                    f"the slices of volume {volume!r} are not consecutive in the evaluated "
                    "split; list each volume's slices together (e.g. sort the split file)"
                )
            self._current = volume
            self._spacing = None
        order = len(self._slices) if position is None else int(position)
        self._slices.append((order, len(self._slices), np.asarray(pred), np.asarray(target)))
        if spacing is not None and all(math.isfinite(float(s)) for s in spacing):
            self._spacing = tuple(float(s) for s in spacing)

    def _flush(self) -> None:
        if self._current is None or not self._slices:
            return
        slices = sorted(self._slices, key=lambda item: item[:2])
        height = max(item[2].shape[0] for item in slices)
        width = max(item[2].shape[1] for item in slices)
        pred = np.zeros((len(slices), height, width), np.int64)
        target = np.full((len(slices), height, width), self.ignore_index, np.int64)
        for index, (_, _, p, t) in enumerate(slices):
            pred[index, : p.shape[0], : p.shape[1]] = p
            target[index, : t.shape[0], : t.shape[1]] = t
        ignored = target == self.ignore_index
        pred[ignored] = 0
        if self.lcc:
            pred = largest_component(pred, self.num_classes)
        # one NumPy pass gives the volume's confusion matrix: its Dice and the per-slice pooling
        k = self.num_classes
        keep = ~ignored
        if keep.any() and (target[keep].max() >= k or pred.max() >= k):
            raise ValueError(f"class ids must be in 0..{k - 1} (or {self.ignore_index})")
        counts = np.bincount(target[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        import torch

        self.confusion.matrix = self.confusion.matrix + torch.from_numpy(counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2.0 * np.diag(counts) / (counts.sum(0) + counts.sum(1))  # 0/0 = NaN
        distances = np.full(self.num_classes, np.nan)
        missed = np.zeros(self.num_classes, bool)
        truth = np.where(ignored, 0, target)
        for k in range(self.num_classes):
            p, t = pred == k, truth == k
            missed[k] = bool(p.any()) != bool(t.any())
            if self.compute_hd95 and k not in self.background:
                distances[k] = hd95(p, t, self._spacing)
        self.scores[self._current] = VolumeScores(
            self._current, len(slices), dice, distances, missed, self._spacing
        )
        self._slices = []

    def finish(self) -> dict[str, VolumeScores]:
        """Score the last volume; returns every volume's scores, in order of arrival."""
        self._flush()
        self._current = None
        return self.scores


def _nanmean(values: np.ndarray) -> float | None:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def summarize_volumes(
    scores: dict[str, VolumeScores],
    class_names: Sequence[str],
    background: Sequence[int] = (0,),
) -> dict[str, Any]:
    """The per-volume metrics as a JSON-friendly dict (NaN -> ``None``).

    Keys: ``volumes`` (count); ``dice_3d`` / ``hd95_3d``: per class, the mean over the volumes
    where it is defined; ``mean_dice_3d`` / ``mean_hd95_3d``: per volume the mean over the
    foreground classes (all but ``background``), averaged over volumes; ``hd95_unit`` (``mm``,
    or ``voxels`` when a volume has no spacing); ``hd95_missed``: per class, the volumes where
    exactly one of prediction and truth is empty (HD95 = the volume diagonal there);
    ``per_volume``: ``{volume: {"dice": {...}, "hd95": {...}}}``.
    """
    names = list(class_names)
    foreground = [k for k in range(len(names)) if k not in set(background)]
    entries = list(scores.values())

    def column(attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) for s in entries], float).reshape(len(entries), -1)

    dice, distance = column("dice"), column("hd95")

    def per_class(matrix: np.ndarray) -> dict[str, float | None]:
        return {name: _nanmean(matrix[:, k]) if entries else None for k, name in enumerate(names)}

    def fg_mean(matrix: np.ndarray) -> float | None:
        per_volume = [_nanmean(row[foreground]) for row in matrix]
        return _nanmean(np.array([v for v in per_volume if v is not None], float))

    def named(values: np.ndarray) -> dict[str, float | None]:
        return {
            n: (None if math.isnan(v) else float(v)) for n, v in zip(names, values, strict=True)
        }

    unit = "mm" if entries and all(s.spacing is not None for s in entries) else "voxels"
    return {
        "volumes": len(entries),
        "dice_3d": per_class(dice),
        "mean_dice_3d": fg_mean(dice),
        "hd95_3d": per_class(distance),
        "mean_hd95_3d": fg_mean(distance),
        "hd95_unit": unit,
        "hd95_missed": {n: int(sum(s.missed[k] for s in entries)) for k, n in enumerate(names)},
        "per_volume": {
            s.volume: {"slices": s.slices, "dice": named(s.dice), "hd95": named(s.hd95)}
            for s in entries
        },
    }
