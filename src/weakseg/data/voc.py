"""PASCAL VOC 2012 (+ SBD augmented set) with ScribbleSup scribbles.

The standard layout::

    ROOT/VOCdevkit/VOC2012/
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png          official masks (palette PNGs; 255 = object boundary)
      SegmentationClassAug/<id>.png       SBD-augmented masks (train_aug), optional
      ImageSets/Segmentation/{train_aug,train,val}.txt
      pascal_2012_scribble/<id>.png       ScribbleSup scribbles: class ids, 255 = unlabeled

``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``. Masks are
looked up in ``SegmentationClassAug`` first, then ``SegmentationClass``. Samples are the dicts
described in :mod:`weakseg.data.dataset`; K = 21 classes (:data:`VOC_CLASSES`).
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
from weakseg.data.xml_scribbles import VOC_CLASSES

__all__ = ["VOCDataset", "find_voc2012"]


def find_voc2012(root: str | Path) -> Path:
    """The ``VOC2012`` folder: ``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root`` itself."""
    root = Path(root)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(
        f"no PASCAL VOC 2012 tree under {root}: expected {root}/VOCdevkit/VOC2012/JPEGImages "
        "(or root pointing at VOCdevkit or VOC2012)"
    )


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012 segmentation with ScribbleSup scribbles (see the module docstring).

    Args:
        root: folder holding ``VOCdevkit`` (or ``VOCdevkit`` / ``VOC2012`` itself).
        split: ``train_aug``, ``train``, ``val`` or any ``ImageSets/Segmentation/<split>.txt``.
        supervision: ``"scribbles"``, ``"clicks"`` or shortened scribbles (``shorten_ratio``),
            ``"full"``, ``"tags"`` (from the masks) or ``"unlabeled"``.
        scribble_dir: the scribble PNGs; default ``VOC2012/pascal_2012_scribble``.
        transform: joint transform (see :mod:`weakseg.data.transforms`), or ``None``.
        skip_bad: log and skip bad samples instead of raising ``DataError``.
        load_masks: give every sample its full ``mask``; ``None`` = when a mask folder exists.
        shorten_ratio: with ``supervision="scribbles"``, shorten them to this ratio.
        mean, std: normalization statistics in 0-255.

    Example::

        >>> train = VOCDataset("data", "train_aug", transform=train_transforms(321))
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        supervision: str = "scribbles",
        scribble_dir: str | Path | None = None,
        transform: Transform | None = None,
        *,
        skip_bad: bool = False,
        load_masks: bool | None = None,
        shorten_ratio: float = 1.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        check_supervision(supervision, shorten_ratio)
        self.root = find_voc2012(root)
        self.split = split
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise DataError(
                f"split file not found: {split_file} (available splits: "
                f"{', '.join(available) or 'none'})"
            )
        scribble_root = Path(scribble_dir) if scribble_dir else self.root / "pascal_2012_scribble"
        if supervision in ("scribbles", "clicks") and not scribble_root.is_dir():
            raise DataError(
                f"supervision={supervision!r} needs the ScribbleSup scribbles, but {scribble_root} "
                "does not exist (convert the XML annotations with `weakseg scribbles convert-xml`)"
            )
        mask_dirs = [
            d
            for d in (self.root / "SegmentationClassAug", self.root / "SegmentationClass")
            if d.is_dir()
        ]
        if load_masks is None:
            load_masks = bool(mask_dirs)
        if load_masks and not mask_dirs:
            raise DataError(
                f"supervision={supervision!r} needs full masks, but neither "
                f"{self.root / 'SegmentationClassAug'} nor {self.root / 'SegmentationClass'} exists"
            )
        if supervision in ("full", "tags") and not load_masks:
            raise DataError(f"supervision={supervision!r} needs full masks (load_masks=False)")
        mask_index: dict[str, Path] = {}
        for directory in reversed(mask_dirs):  # SegmentationClassAug wins
            mask_index.update(index_dir(directory))
        scribble_index = index_dir(scribble_root)
        images = index_dir(self.root / "JPEGImages")
        files = [
            SampleFiles(
                id=sample_id,
                image=images.get(sample_id, self.root / "JPEGImages" / f"{sample_id}.jpg"),
                scribbles=scribble_index.get(sample_id, scribble_root / f"{sample_id}.png"),
                mask=mask_index.get(sample_id, mask_dirs[0] / f"{sample_id}.png")
                if load_masks
                else None,
            )
            for sample_id in read_split(split_file)
        ]
        super().__init__(
            files,
            VOC_CLASSES,
            supervision,
            transform,
            skip_bad=skip_bad,
            shorten_ratio=shorten_ratio,
            channels=3,
            mean=mean,
            std=std,
            source=str(split_file),
        )
