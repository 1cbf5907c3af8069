"""Folder datasets: your own images with sparse labels, in the format of ``data/acdc-scribble``::

    ROOT/
      images/<id>.<ext>     a 2D image (any PIL-readable file: gray or RGB, 8 or 16 bit) or a
                            volume (.nii, .nii.gz, .h5)
      scribbles/<id>.<ext>  class ids on scribbled pixels, 255 = unlabeled (PNG, or a volume)
      masks/<id>.<ext>      full ground truth (class ids; 255 = ignore; PNG, or a volume)
      splits/<name>.txt     one id per line (a volume id for volume files)
      classes.txt           one class name per line, in id order (K lines)

Label PNGs are 8-bit gray or palette (read by index). A volume id gives one sample per slice
along the slice axis (``slice_axis``; default the through-plane axis, see
:func:`~weakseg.data.volumes.through_plane_axis`), with id ``<id>_slice_<n>`` and the
volume's voxel spacing; its label files are volumes of the same shape. An ``.h5`` image may
hold its labels too (WSL4MIS files: datasets ``image``, ``scribble``, ``label``); they are used
when ``scribbles/`` or ``masks/`` has no file for the id. A split holds volumes or 2D images,
not both.

Files are needed only where they are used: scribbles for ``supervision`` scribbles or clicks
(and tags without masks), masks for ``supervision="full"``, with ``load_masks=True``
(evaluation), or, by default, whenever every id of the split has one. A train split with
scribbles and no masks trains; an evaluation split needs masks and no scribbles. A needed file
that is missing is a :class:`DataError` naming it. Samples are the dicts described in
:mod:`weakseg.data.dataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from weakseg.data.dataset import (
    SampleFiles,
    SegmentationDataset,
    Transform,
    check_supervision,
    index_dir,
    read_split,
)
from weakseg.data.io import DataError
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.data.volumes import H5_KEYS, is_volume_file, through_plane_axis, volume_shape

logger = logging.getLogger("weakseg.data")

__all__ = ["FolderDataset", "read_classes"]


def read_classes(path: Path) -> list[str]:
    """Class names from ``classes.txt``, one per line (blank lines and ``#`` comments skipped)."""
    if not path.is_file():
        raise DataError(f"missing classes file: {path} (one class name per line, in id order)")
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    names = [name for name in names if name]
    if not names:
        raise DataError(f"classes file {path} lists no class")
    if len(names) > 255:
        raise DataError(
            f"classes file {path} lists {len(names)} classes; at most 255 fit in PNG labels"
        )
    return names


class FolderDataset(SegmentationDataset):
    """A dataset in the folder format (see the module docstring).

    Args:
        root: the dataset folder.
        split: name of a file ``splits/<split>.txt``.
        supervision: ``"scribbles"``, ``"clicks"``, ``"full"``, ``"tags"`` or ``"unlabeled"``.
        transform: joint transform (see :mod:`weakseg.data.transforms`), or ``None``.
        skip_bad: log and skip bad samples instead of raising ``DataError``.
        load_masks: ``True``: every sample has its ``mask`` (a missing file is an error);
            ``False``: none; ``None``: when every id of the split has a mask file (always with
            ``supervision="full"``).
        shorten_ratio: with ``supervision="scribbles"``, shorten them to this ratio.
        channels: force 1 or 3 image channels; ``None`` keeps each file's own.
        mean, std: normalization statistics in 0-255.
        slice_axis: volumes: the axis of the stored array to slice along; ``None`` = the
            through-plane axis (largest spacing, else fewest voxels).
        intensity_percentiles: ``(low, high)``: clip each volume (or 2D image) to these
            percentiles of its values and scale to 0-255; ``None`` = as stored.

    Example::

        >>> train = FolderDataset("data/acdc-scribble", "train")
        >>> sample = train[0]; sample["image_raw"].shape, sample["label"].dtype
        (torch.Size([1, 256, 216]), torch.int64)
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        supervision: str = "scribbles",
        transform: Transform | None = None,
        *,
        skip_bad: bool = False,
        load_masks: bool | None = None,
        shorten_ratio: float = 1.0,
        channels: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        slice_axis: int | None = None,
        intensity_percentiles: Sequence[float] | None = None,
    ) -> None:
        check_supervision(supervision, shorten_ratio)
        self.root = Path(root)
        self.split = split
        self.slice_axis = slice_axis
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        split_file = self.split_file(self.root, split)
        class_names = read_classes(self.root / "classes.txt")
        mask_dir = self.root / "masks"
        if supervision == "full" and load_masks is False:
            raise DataError(
                f"supervision='full' needs full masks, but {mask_dir} is not loaded "
                "(load_masks=False)"
            )
        ids = read_split(split_file)
        images = index_dir(self.root / "images")
        scribbles = index_dir(self.root / "scribbles")
        masks = index_dir(mask_dir)
        image_paths = {i: images.get(i, self.root / "images" / f"{i}.png") for i in ids}
        volumes = {i for i, path in image_paths.items() if is_volume_file(path)}
        if volumes and len(volumes) != len(ids):
            two_d = next(i for i in ids if i not in volumes)
            raise DataError(
                f"split {split_file} mixes volume files ({image_paths[next(iter(volumes))]}) "
                f"and 2D images ({image_paths[two_d]}); put them in separate splits"
            )
        scribble_paths = {i: _label_path(i, scribbles, image_paths[i], "scribble") for i in ids}
        mask_paths = {i: _label_path(i, masks, image_paths[i], "mask") for i in ids}
        if load_masks is None:
            missing = [i for i in ids if mask_paths[i] is None]
            load_masks = supervision == "full" or (bool(ids) and not missing)
            if missing and len(missing) < len(ids) and not load_masks:
                logger.warning(
                    "split %s: %d of %d ids have no mask file (e.g. %s); masks not loaded",
                    split,
                    len(missing),
                    len(ids),
                    mask_dir / f"{missing[0]}.png",
                )
        default_ext = ".nii.gz" if volumes else ".png"
        files = []
        for sample_id in ids:
            entry = SampleFiles(
                id=sample_id,
                image=image_paths[sample_id],
                scribbles=scribble_paths[sample_id]
                or self.root / "scribbles" / f"{sample_id}{default_ext}",
                mask=(mask_paths[sample_id] or mask_dir / f"{sample_id}{default_ext}")
                if load_masks
                else None,
            )
            if sample_id in volumes:
                files += self._slices(entry, skip_bad, split_file)
            else:
                files.append(entry)
        super().__init__(
            files,
            class_names,
            supervision,
            transform,
            skip_bad=skip_bad,
            shorten_ratio=shorten_ratio,
            channels=channels,
            mean=mean,
            std=std,
            source=str(split_file),
            intensity_percentiles=intensity_percentiles,
        )
        self.is_volumetric = bool(volumes)

    @staticmethod
    def split_file(root: Path, split: str) -> Path:
        """``root/splits/<split>.txt``; DataError listing the available splits when missing."""
        path = Path(root) / "splits" / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in (Path(root) / "splits").glob("*.txt"))
            raise DataError(
                f"split file not found: {path} (available splits: {', '.join(available) or 'none'})"
            )
        return path

    def _slices(self, entry: SampleFiles, skip_bad: bool, source: Path) -> list[SampleFiles]:
        """One entry per slice of the volume ``entry.image`` (none for a bad file when
        ``skip_bad``: logged)."""
        if not entry.image.is_file():
            return [entry]  # reported as a missing image file, naming the id, by the base class
        try:
            shape, spacing = volume_shape(entry.image, "image")
            axis = self.slice_axis
            if axis is None:
                axis = through_plane_axis(shape, spacing)
            elif not -3 <= axis < 3:
                raise DataError(
                    f"slice_axis={axis} is out of range for the 3D volume {entry.image}"
                )
        except DataError as exc:
            if not skip_bad:
                raise
            logger.warning("skipping volume %r (listed in %s): %s", entry.id, source, exc)
            return []
        axis %= 3
        return [
            SampleFiles(
                id=f"{entry.id}_slice_{index}",
                image=entry.image,
                scribbles=entry.scribbles,
                mask=entry.mask,
                volume=entry.id,
                slice=index,
                axis=axis,
            )
            for index in range(shape[axis])
        ]

    def volume_ids(self) -> list[str]:
        """The ids of the split file that gave samples, in order (2D images: their own ids)."""
        seen: dict[str, None] = {}
        for entry in self.files:
            seen.setdefault(entry.volume or entry.id, None)
        return list(seen)


def _label_path(sample_id: str, index: dict[str, Path], image: Path, what: str) -> Path | None:
    """The ``what`` file of ``sample_id``: in its folder, else the ``.h5`` image itself when it
    holds that dataset (WSL4MIS files); ``None`` when there is none."""
    if sample_id in index:
        return index[sample_id]
    if image.name.lower().endswith((".h5", ".hdf5")) and image.is_file():
        try:
            import h5py

            with h5py.File(image, "r") as handle:
                if H5_KEYS[what] in handle:
                    return image
        except (ImportError, OSError):
            return None  # reported when the image itself is read
    return None
