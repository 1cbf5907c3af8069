"""The base of the file datasets (:class:`FolderDataset`, :class:`VOCDataset`): loading, checks,
supervision, transforms and the sample dict.

A sample is a dict:

- ``image``: float32 ``Tensor[C, H, W]``, normalized with ``(image_raw - mean) / std``;
  padding added by a transform is 0 there (it is filled with the mean).
- ``image_raw``: float32 ``Tensor[C, H, W]`` in 0-255, after the same transforms (the
  regularizers need raw intensities). ``C`` = 1 for gray files, 3 for colour ones, unless
  ``channels`` forces one.
- ``label``: int64 ``Tensor[H, W]``, the training target of the chosen ``supervision``; class ids
  ``0..K-1``, 255 = unlabeled (and on padding).
- ``mask``: int64 ``Tensor[H, W]``, the full ground truth (255 on padding and on pixels the
  dataset marks as ignore, e.g. VOC object boundaries). Present only when the dataset has full
  masks (``dataset.has_masks``), for every sample of it; absent otherwise.
- ``valid_mask``: bool ``Tensor[H, W]``, True on real pixels, False on padding.
- ``tags``: bool ``Tensor[K]``, the classes present (from the full mask when there is one, else
  from the scribbles).
- ``id``: str, the sample's id in the split file; for a slice of a volume file
  ``<volume id>_slice_<n>``.
- Slices of volume files (:mod:`weakseg.data.volumes`) also carry ``volume`` (str, the id in
  the split file), ``slice`` (int, its index along the slice axis) and ``spacing`` (float64
  ``Tensor[3]``: through-plane, row and column voxel size in mm, NaN when the file does not
  say).

``supervision`` picks ``label``: ``"scribbles"`` (optionally shortened by ``shorten_ratio``),
``"clicks"`` (scribbles shortened to one click per object), ``"full"`` (the full mask), ``"tags"``
and ``"unlabeled"`` (``label`` all 255; use ``tags``). The default collate function of
``torch.utils.data.DataLoader`` batches samples of equal size (``id`` becomes a list).

Bad data (a missing file for a listed id, image / scribble / mask size mismatch, label values
``>= K`` other than 255, an unreadable or truncated file) raises :class:`DataError` naming the
file and the problem. With ``skip_bad=True`` it is logged (``logging``, logger
``weakseg.data``) and skipped instead: ids with missing files are dropped when the dataset is
built; a sample that fails to load is replaced by the next good one (``validate()`` finds and
drops every bad sample up front, at the cost of reading everything once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from weakseg.data.io import (
    IGNORE_INDEX,
    DataError,
    check_label_values,
    check_same_size,
    read_image,
    read_label,
)
from weakseg.data.scribbles import image_tags, shorten_scribbles
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ValidMask, normalize
from weakseg.data.volumes import Volume, VolumeCache, file_id, scale_intensity

__all__ = [
    "SUPERVISIONS",
    "SampleFiles",
    "SegmentationDataset",
    "dataset_label",
    "select_label",
    "to_sample",
]

logger = logging.getLogger("weakseg.data")

SUPERVISIONS: tuple[str, ...] = ("scribbles", "clicks", "full", "tags", "unlabeled")

Transform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample; ``None`` where the dataset has no such file.

    A slice of volume files has ``slice`` (its index along the file axis ``axis``) and
    ``volume`` (the volume's id) set; the label files are then volumes of the image's shape.
    """

    id: str
    image: Path
    scribbles: Path | None = None
    mask: Path | None = None
    volume: str | None = None
    slice: int | None = None
    axis: int | None = None


def check_supervision(supervision: str, shorten_ratio: float) -> None:
    if supervision not in SUPERVISIONS:
        raise ValueError(
            f"supervision must be one of {', '.join(SUPERVISIONS)}; got {supervision!r}"
        )
    if not 0.0 <= float(shorten_ratio) <= 1.0:
        raise ValueError(f"shorten_ratio must be in [0, 1], got {shorten_ratio!r}")
    if shorten_ratio != 1.0 and supervision != "scribbles":
        raise ValueError(
            f"shorten_ratio={shorten_ratio} applies to supervision='scribbles' only, "
            f"got supervision={supervision!r}"
        )


def to_sample(
    sample_id: str,
    image_raw: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None,
    tags: torch.Tensor,
    transform: Transform | None,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """Build the sample dict (see the module docstring) from arrays, applying ``transform``.

    ``image_raw [C, H, W]`` is in 0-255; ``label`` and ``mask`` are ``[H, W]`` class ids. A
    slab (:mod:`weakseg.data.slabs`) has a leading slab axis on all of them: ``[S, C, H, W]``
    and ``[S, H, W]``.
    """
    image = torch.as_tensor(np.asarray(image_raw, dtype=np.float32)) / 255.0
    labels = torch.as_tensor(np.asarray(label, dtype=np.int64))
    spatial: dict[str, Any] = {
        "image": tv_tensors.Image(image),
        "label": tv_tensors.Mask(labels),
        "valid_mask": ValidMask(torch.ones(labels.shape, dtype=torch.bool)),
    }
    if mask is not None:
        spatial["mask"] = tv_tensors.Mask(torch.as_tensor(np.asarray(mask, dtype=np.int64)))
    if transform is not None:
        spatial = transform(spatial)
    raw = spatial["image"].as_subclass(torch.Tensor).float() * 255.0
    sample = {
        "image": normalize(raw, mean, std),
        "image_raw": raw,
        "label": spatial["label"].as_subclass(torch.Tensor).long(),
        "valid_mask": spatial["valid_mask"].as_subclass(torch.Tensor).bool(),
        "tags": tags,
        "id": sample_id,
    }
    if "mask" in spatial:
        sample["mask"] = spatial["mask"].as_subclass(torch.Tensor).long()
    return sample


def select_label(
    supervision: str,
    size: tuple[int, int],
    scribbles: np.ndarray | None,
    mask: np.ndarray | None,
    num_classes: int,
    shorten_ratio: float = 1.0,
) -> tuple[np.ndarray, torch.Tensor]:
    """The training ``label [H, W]`` of ``supervision`` and the ``tags [K]`` of a sample.

    Tags come from the full mask when there is one, else from the scribbles.
    """
    if supervision == "scribbles":
        label = scribbles
        if shorten_ratio < 1.0:
            label = shorten_scribbles(scribbles, shorten_ratio, mask=mask)
    elif supervision == "clicks":
        label = shorten_scribbles(scribbles, 0.0, mask=mask)
    elif supervision == "full":
        label = mask
    else:
        label = np.full(tuple(size), IGNORE_INDEX, dtype=np.int64)
    source = mask if mask is not None else scribbles
    if source is None:
        tags = torch.zeros(num_classes, dtype=torch.bool)
    else:
        tags = image_tags(source, num_classes)
    return label, tags


def dataset_label(
    dataset: Any, size: tuple[int, int], scribbles: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`select_label` with the ``supervision``, ``num_classes`` and ``shorten_ratio`` of
    ``dataset`` (a folder or synthetic data set): its training ``(label, tags)`` of a sample."""
    return select_label(
        dataset.supervision, size, scribbles, mask, dataset.num_classes, dataset.shorten_ratio
    )


class SegmentationDataset(Dataset):
    """A list of :class:`SampleFiles` read as sample dicts; see the module docstring.

    Subclasses find the files; this class reads and checks them.

    Args:
        files: one entry per sample.
        class_names: the ``K`` class names, in id order.
        supervision: one of :data:`SUPERVISIONS`.
        transform: joint transform (see :mod:`weakseg.data.transforms`), or ``None``.
        skip_bad: log and skip bad samples instead of raising :class:`DataError`.
        shorten_ratio: with ``supervision="scribbles"``, shorten them to this ratio.
        channels: force 1 (gray) or 3 (RGB) image channels; ``None`` keeps each file's own.
        mean, std: normalization statistics in 0-255 (per channel; gray uses the averages).
        source: where the ids come from, for error messages (e.g. the split file).
        intensity_percentiles: ``(low, high)``: clip each image (each volume, for slices of
            volume files) to these percentiles of its values and scale to 0-255; ``None``
            keeps the intensities as read.
    """

    def __init__(
        self,
        files: Sequence[SampleFiles],
        class_names: Sequence[str],
        supervision: str = "scribbles",
        transform: Transform | None = None,
        *,
        skip_bad: bool = False,
        shorten_ratio: float = 1.0,
        channels: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        source: str = "",
        intensity_percentiles: Sequence[float] | None = None,
    ) -> None:
        check_supervision(supervision, shorten_ratio)
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
        if intensity_percentiles is not None:
            intensity_percentiles = tuple(float(p) for p in intensity_percentiles)
            if len(intensity_percentiles) != 2:
                raise ValueError(
                    f"intensity_percentiles must be (low, high), got {intensity_percentiles!r}"
                )
            scale_intensity(np.zeros(1), intensity_percentiles)  # checks the range
        self.intensity_percentiles = intensity_percentiles
        self._volumes = VolumeCache()
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.supervision = supervision
        self.transform = transform
        self.skip_bad = skip_bad
        self.shorten_ratio = float(shorten_ratio)
        self.channels = channels
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.has_masks = bool(files) and all(f.mask is not None for f in files)
        self._bad: set[int] = set()
        needed = self._needed_files()
        kept = []
        for entry in files:
            problem = None
            for what in needed:
                path = getattr(entry, what) if what != "image" else entry.image
                if path is None or not Path(path).is_file():
                    where = f" (listed in {source})" if source else ""
                    problem = f"missing {_NAMES[what]} file for id {entry.id!r}{where}: {path}"
                    break
            if problem is None:
                kept.append(entry)
            elif skip_bad:
                logger.warning("skipping: %s", problem)
            else:
                raise DataError(problem)
        self.files = kept

    def _needed_files(self) -> list[str]:
        needed = ["image"]
        if self.supervision in ("scribbles", "clicks") or (
            self.supervision == "tags" and not self.has_masks
        ):
            needed.append("scribbles")
        if self.supervision == "full" or self.has_masks:
            needed.append("mask")
        return needed

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Read and check sample ``index``: image ``[C, H, W]`` (0-255), scribbles and mask
        ``[H, W]`` (``None`` when not used). Raises :class:`DataError` on bad data."""
        entry = self.files[index]
        if entry.slice is not None:
            return self._load_slice(entry)
        image = read_image(entry.image, self.channels)
        if self.intensity_percentiles is not None:
            image = scale_intensity(image, self.intensity_percentiles)
        hw = image.shape[-2:]
        scribbles = mask = None
        if self._wants_scribbles() and entry.scribbles is not None:
            scribbles = read_label(entry.scribbles, "scribble")
            check_same_size(hw, scribbles.shape, entry.image, entry.scribbles, "scribble")
            check_label_values(scribbles, self.num_classes, entry.scribbles, "scribble")
        if self.has_masks:
            mask = read_label(entry.mask, "mask")
            check_same_size(hw, mask.shape, entry.image, entry.mask, "mask")
            check_label_values(mask, self.num_classes, entry.mask, "mask")
        return image, scribbles, mask

    def _wants_scribbles(self) -> bool:
        return self.supervision in ("scribbles", "clicks") or (
            self.supervision == "tags" and not self.has_masks
        )

    def volume(self, index: int, what: str = "image") -> Volume:
        """The whole volume (slice axis first) that sample ``index`` is a slice of; ``what``
        = ``"image"`` (intensities as the samples have them), ``"scribble"`` or ``"mask"``.

        Raises:
            ValueError: the sample is a 2D image, not a slice of a volume file.
            DataError: the file is missing or unreadable.
        """
        return self._volume(self.files[index], what)

    def _volume(self, entry: SampleFiles, what: str) -> Volume:
        if entry.slice is None:
            raise ValueError(f"sample {entry.id!r} is a 2D image, not a slice of a volume")
        path = {"image": entry.image, "scribble": entry.scribbles, "mask": entry.mask}[what]
        if path is None:
            raise DataError(f"sample {entry.id!r} has no {what} file")
        percentiles = self.intensity_percentiles if what == "image" else None
        return self._volumes.get(path, what, entry.axis, percentiles)

    def _load_slice(
        self, entry: SampleFiles
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        image_volume = self._volume(entry, "image")
        image = image_volume.array[entry.slice][None]  # (1, H, W)
        if self.channels == 3:
            image = np.repeat(image, 3, axis=0)
        labels: dict[str, np.ndarray | None] = {"scribble": None, "mask": None}
        wanted = {"scribble": self._wants_scribbles() and entry.scribbles is not None}
        wanted["mask"] = self.has_masks
        for what, path in (("scribble", entry.scribbles), ("mask", entry.mask)):
            if not wanted[what]:
                continue
            volume = self._volume(entry, what)
            if volume.array.shape != image_volume.array.shape:
                raise DataError(
                    f"size mismatch: image volume {entry.image} has shape "
                    f"{image_volume.array.shape} (slice axis first) but {what} volume {path} "
                    f"has {volume.array.shape}"
                )
            labels[what] = volume.array[entry.slice]
            check_label_values(labels[what], self.num_classes, path, what)
        return np.ascontiguousarray(image), labels["scribble"], labels["mask"]

    def _sample(self, index: int) -> dict[str, Any]:
        image, scribbles, mask = self.load(index)
        label, tags = dataset_label(self, image.shape[-2:], scribbles, mask)
        entry = self.files[index]
        sample = to_sample(entry.id, image, label, mask, tags, self.transform, self.mean, self.std)
        if entry.slice is not None:
            spacing = self._volume(entry, "image").spacing
            sample["volume"] = entry.volume
            sample["slice"] = entry.slice
            sample["spacing"] = torch.tensor(
                spacing if spacing is not None else (float("nan"),) * 3, dtype=torch.float64
            )
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index %= len(self)
        if not self.skip_bad:
            return self._sample(index)
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            if current in self._bad:
                continue
            try:
                return self._sample(current)
            except DataError as exc:
                self._bad.add(current)
                logger.warning("skipping bad sample %r: %s", self.files[current].id, exc)
        raise DataError(f"every one of the {len(self)} samples is bad (see the log)")

    def validate(self) -> list[tuple[str, str]]:
        """Read every sample; return ``(id, problem)`` for the bad ones.

        With ``skip_bad=True`` the bad samples are also dropped from the dataset (and logged).
        """
        problems, good = [], []
        for index, entry in enumerate(self.files):
            try:
                self.load(index)
            except DataError as exc:
                problems.append((entry.id, str(exc)))
                if self.skip_bad:
                    logger.warning("skipping bad sample %r: %s", entry.id, exc)
                continue
            good.append(entry)
        if self.skip_bad:
            self.files = good
            self._bad.clear()
        return problems

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, "
            f"supervision={self.supervision!r}, has_masks={self.has_masks})"
        )


_NAMES = {"image": "image", "scribbles": "scribble", "mask": "mask"}


def read_split(path: Path) -> list[str]:
    """Ids listed in a split file: the first token of each non-empty line, without extension,
    ``#`` starting a comment."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(Path(line.split()[0]).stem if "/" in line.split()[0] else line.split()[0])
    return ids


def index_dir(directory: Path) -> dict[str, Path]:
    """Map file id -> path for the files of ``directory`` (the id is the name without its
    extension, ``.nii.gz`` counted as one; PNG preferred on duplicate ids)."""
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        key = file_id(path)
        if key not in found or path.suffix.lower() == ".png":
            found[key] = path
    return found
