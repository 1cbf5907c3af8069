"""Folder datasets: your own images with sparse labels, in the format of ``data/acdc-scribble``::

    ROOT/
      images/<id>.<ext>     any PIL-readable image: gray or RGB, 8 or 16 bit
      scribbles/<id>.png    class ids on scribbled pixels, 255 = unlabeled
      masks/<id>.png        optional full ground truth (class ids; 255 = ignore)
      splits/<name>.txt     one id per line
      classes.txt           one class name per line, in id order (K lines)

Label PNGs are 8-bit gray or palette (read by index). Samples are the dicts described in
:mod:`weakseg.data.dataset`.
"""

from __future__ import annotations

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
        load_masks: read ``masks/`` to give every sample a ``mask``; ``None`` = when it exists.
        shorten_ratio: with ``supervision="scribbles"``, shorten them to this ratio.
        channels: force 1 or 3 image channels; ``None`` keeps each file's own.
        mean, std: normalization statistics in 0-255.

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
    ) -> None:
        check_supervision(supervision, shorten_ratio)
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        split_file = self.root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in (self.root / "splits").glob("*.txt"))
            raise DataError(
                f"split file not found: {split_file} (available splits: "
                f"{', '.join(available) or 'none'})"
            )
        class_names = read_classes(self.root / "classes.txt")
        mask_dir = self.root / "masks"
        if load_masks is None:
            load_masks = mask_dir.is_dir()
        if supervision == "full" and not load_masks:
            raise DataError(
                f"supervision='full' needs full masks, but {mask_dir} "
                + (
                    "does not exist"
                    if not mask_dir.is_dir()
                    else "is not loaded (load_masks=False)"
                )
            )
        if supervision in ("scribbles", "clicks") and not (self.root / "scribbles").is_dir():
            raise DataError(
                f"supervision={supervision!r} needs scribbles, but {self.root / 'scribbles'} "
                "does not exist"
            )
        images = index_dir(self.root / "images")
        scribbles = index_dir(self.root / "scribbles")
        masks = index_dir(mask_dir) if load_masks else {}
        files = []
        for sample_id in read_split(split_file):
            files.append(
                SampleFiles(
                    id=sample_id,
                    image=images.get(sample_id, self.root / "images" / f"{sample_id}.png"),
                    scribbles=scribbles.get(
                        sample_id, self.root / "scribbles" / f"{sample_id}.png"
                    ),
                    mask=masks.get(sample_id, mask_dir / f"{sample_id}.png")
                    if load_masks
                    else None,
                )
            )
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
        )
