"""Slabs: training samples of ``S`` adjacent slices of one volume, so that a 2D network sees the
slices as a batch while the regularizers see them as a small volume (``slab_slices`` of a
training config).

A slab sample is the sample dict of :mod:`weakseg.data.dataset` with a leading slab axis:
``image`` and ``image_raw`` ``[S, C, H, W]``, ``label``, ``valid_mask`` (and ``mask``)
``[S, H, W]``, ``tags`` ``[S, K]``; ``id`` is ``<volume>_slices_<first>-<last>``, ``volume`` the
volume's id, ``slices`` (int64 ``[S]``) the slice numbers, and slabs of volume files carry the
``spacing`` of their slices. The S slices go through the dataset's transform in one call, so
they share one draw of its scale, rotation, crop and flips (:mod:`weakseg.data.transforms`); the
default collate function stacks slabs to ``[B, S, ...]``.

Volumes are the slices of volume files (``.nii``, ``.nii.gz``, ``.h5``: one sample per slice)
or 2D slice files grouped by the id pattern (:func:`~weakseg.data.volumes.volume_key`, default
``<volume>_slice_<n>``; the pattern must give the slice number). A volume is cut into runs of
consecutive slice numbers: a slice missing from the split ends a run.

Which slabs an epoch holds (:func:`slab_starts`): a run of ``n >= S`` slices gives
``ceil(n / S)`` slabs; the first starts at its first slice, the last ends at its last, and the
``ceil(n / S) S - n`` slices that do not fit side by side become overlaps between neighbouring
slabs, at junctions drawn from ``(seed, epoch)``. So every slice is in one or two slabs of each
epoch, the slab boundaries move from epoch to epoch where there is a choice (``S`` does not
divide ``n`` and there are three slabs or more; otherwise the tiling is fixed), and the epoch
length ``sum ceil(n / S)`` is the same in every epoch, as the sampler's resume position and DDP
shards need. Edges: a slab never crosses the end of a run and is never
padded; runs shorter than ``S`` give no slab (logged).

Example::

    >>> train = FolderDataset("data/acdc-scribble", "train", transform=train_transforms(224))
    >>> slabs = SlabDataset(train, 3, seed=0)
    >>> slabs.set_epoch(0); slabs[0]["image_raw"].shape
    torch.Size([3, 1, 224, 224])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from weakseg.data.dataset import SegmentationDataset, dataset_label, to_sample
from weakseg.data.io import DataError
from weakseg.data.volumes import volume_key

__all__ = ["SlabDataset", "SliceRun", "slab_starts", "slice_runs"]

logger = logging.getLogger("weakseg.data")

# Entropy that separates the slab tiling from the other draws of the same seed.
_SLAB_STREAM = 0x51AB5


@dataclass(frozen=True)
class SliceRun:
    """Consecutive slices of one volume.

    Attributes:
        volume: the volume's id.
        first: the slice number of the first one.
        indices: their dataset indices, in slice order (slice ``first + i`` is ``indices[i]``).
    """

    volume: str
    first: int
    indices: tuple[int, ...]


def slice_runs(dataset: SegmentationDataset, volume_pattern: str | None = None) -> list[SliceRun]:
    """The samples of ``dataset`` as runs of consecutive slices of one volume, in the order of
    their first sample.

    Slices of volume files are placed by their ``volume`` and ``slice``; 2D files by
    :func:`~weakseg.data.volumes.volume_key` of their id with ``volume_pattern``. An id that
    the pattern gives no slice number for is a run of its own.

    Raises:
        DataError: two samples of one volume with the same slice number.
    """
    volumes: dict[str, dict[int, int]] = {}
    for index, entry in enumerate(dataset.files):
        if entry.slice is not None:
            volume, number = entry.volume or entry.id, entry.slice
        else:
            volume, number = volume_key(entry.id, volume_pattern)
            if number is None:
                volume, number = entry.id, 0
        numbers = volumes.setdefault(volume, {})
        if number in numbers:
            other = dataset.files[numbers[number]].id
            raise DataError(
                f"ids {other!r} and {entry.id!r} are both slice {number} of volume {volume!r} "
                f"(volume_pattern {volume_pattern or 'default'}); rename one or change the pattern"
            )
        numbers[number] = index
    runs = []
    for volume, numbers in volumes.items():
        ordered = sorted(numbers)
        start = 0
        for end in range(1, len(ordered) + 1):
            if end == len(ordered) or ordered[end] != ordered[end - 1] + 1:
                members = tuple(numbers[n] for n in ordered[start:end])
                runs.append(SliceRun(volume, ordered[start], members))
                start = end
    return sorted(runs, key=lambda run: run.indices[0])


def slab_starts(length: int, slices: int, rng: np.random.Generator) -> list[int]:
    """Where the ``ceil(length / slices)`` slabs of a run of ``length >= slices`` slices start:
    0 first, ``length - slices`` last, and the ``ceil(length / slices) * slices - length``
    slices of overlap spread over random junctions (at most ``slices - 1`` each).

    >>> slab_starts(9, 3, np.random.default_rng(0))
    [0, 3, 6]
    >>> starts = slab_starts(10, 3, np.random.default_rng(0)); starts[0], starts[-1], len(starts)
    (0, 7, 4)
    """
    if not 1 <= slices <= length:
        raise ValueError(f"a run of {length} slices holds no slab of {slices}")
    count = -(-length // slices)
    overlaps = np.zeros(count - 1, dtype=np.int64)
    for _ in range(count * slices - length):
        free = np.flatnonzero(overlaps < slices - 1)
        overlaps[rng.choice(free)] += 1
    shifts = np.concatenate([[0], np.cumsum(overlaps)])
    return [int(s) for s in np.arange(count) * slices - shifts]


class SlabDataset(Dataset):
    """Slabs of ``slices`` adjacent slices of the volumes of ``dataset``; see the module
    docstring.

    Args:
        dataset: the per-slice dataset (a :class:`~weakseg.data.FolderDataset`); its
            ``transform``, ``mean``, ``std``, ``supervision`` and ``skip_bad`` apply to slabs.
        slices: ``S``, the slices of a slab (>= 1).
        seed: with the epoch (:meth:`set_epoch`), where the slabs of each run start.
        volume_pattern: groups 2D slice ids into volumes (``None``: ``<volume>_slice_<n>``).

    Raises:
        ValueError: ``slices`` < 1.
        DataError: two samples of one volume with the same slice number.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        slices: int,
        *,
        seed: int = 0,
        volume_pattern: str | None = None,
    ) -> None:
        if isinstance(slices, bool) or int(slices) != slices or slices < 1:
            raise ValueError(f"slices must be an integer >= 1, got {slices!r}")
        self.dataset, self.slices, self.seed = dataset, int(slices), int(seed)
        self.class_names = list(dataset.class_names)
        self.num_classes = len(self.class_names)
        self.has_masks = bool(getattr(dataset, "has_masks", False))
        runs = slice_runs(dataset, volume_pattern)
        self.runs = [run for run in runs if len(run.indices) >= self.slices]
        if len(self.runs) < len(runs):
            short = [run for run in runs if len(run.indices) < self.slices]
            logger.warning(
                "slabs of %d slices: %d of %d runs of consecutive slices are shorter (%d slices, "
                "e.g. volume %r), left out of training",
                self.slices,
                len(short),
                len(runs),
                sum(len(run.indices) for run in short),
                short[0].volume,
            )
        self._slots = [
            (r, j) for r, run in enumerate(self.runs) for j in range(-(-len(run.indices) // slices))
        ]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the slabs of ``epoch`` (the same number in every epoch)."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, _SLAB_STREAM, self.epoch])
        self._starts = [slab_starts(len(run.indices), self.slices, rng) for run in self.runs]

    def __len__(self) -> int:
        return len(self._slots)

    def members(self, index: int) -> tuple[SliceRun, int]:
        """``(run, start)``: slab ``index`` of this epoch is slices ``run.first + start`` to
        ``run.first + start + S - 1`` of ``run.volume``."""
        run, slot = self._slots[index]
        return self.runs[run], self._starts[run][slot]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slabs")
        index %= len(self)
        if not self.dataset.skip_bad:
            return self._slab(index)
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            try:
                return self._slab(current)
            except DataError as exc:
                logger.warning("skipping bad slab %d: %s", current, exc)
        raise DataError(f"every one of the {len(self)} slabs is bad (see the log)")

    def _slab(self, index: int) -> dict[str, Any]:
        base = self.dataset
        run, start = self.members(index)
        indices = run.indices[start : start + self.slices]
        images, labels, masks, tags = [], [], [], []
        for position in indices:
            image, scribbles, mask = base.load(position)
            if images and image.shape != images[0].shape:
                raise DataError(
                    f"slices of one slab differ in size: {base.files[indices[0]].id!r} is "
                    f"{images[0].shape}, {base.files[position].id!r} is {image.shape} (C, H, W)"
                )
            label, tag = dataset_label(base, image.shape[-2:], scribbles, mask)
            images.append(image)
            labels.append(label)
            masks.append(mask)
            tags.append(tag)
        first = run.first + start
        sample = to_sample(
            f"{run.volume}_slices_{first}-{first + self.slices - 1}",
            np.stack(images),
            np.stack(labels),
            None if masks[0] is None else np.stack(masks),
            torch.stack(tags),
            base.transform,
            base.mean,
            base.std,
        )
        sample["volume"] = run.volume
        sample["slices"] = torch.arange(first, first + self.slices)
        if base.files[indices[0]].slice is not None:  # a volume file: its voxel spacing
            spacing = base.volume(indices[0]).spacing
            sample["spacing"] = torch.tensor(
                spacing if spacing is not None else (float("nan"),) * 3, dtype=torch.float64
            )
        return sample

    def __repr__(self) -> str:
        return (
            f"SlabDataset({len(self)} slabs of {self.slices} slices from {len(self.runs)} runs, "
            f"epoch {self.epoch}, {self.dataset!r})"
        )
