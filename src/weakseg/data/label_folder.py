"""Training labels from a folder of full masks: proposals ("fake" ground truth) in place of a
dataset's own labels.

:class:`LabelFolderDataset` wraps a dataset built *without* a transform and, when its
``label_dir`` is set, replaces each sample's ``label`` by the mask ``<label_dir>/<id>.png``
(class ids, 255 = ignore; the folder-dataset label format) *before* applying the joint
transform, so crops and flips move image and mask together. With ``label_dir=None`` it passes
the dataset's own labels through. The paper's proposal baselines (Table 2) use it:

- GrabCut (one time): ``label_dir`` = the masks written by
  :func:`~weakseg.proposals.write_grabcut_proposals` (``weakseg proposals grabcut``);
- ScribbleSup-style iterative proposals: the training loop points ``label_dir`` at each round's
  folder (:mod:`weakseg.proposals.iterative`); the first round trains on the scribbles.

SEC (Table 3) reads its localization cues the same way (``cue_dir``, same format, 255 = no
cue), with ``resize=True`` since cues are often stored at the network's output resolution.

``label_dir`` is read when a sample is loaded: set it between epochs (DataLoader workers copy
the dataset when an epoch's iterator is created).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from weakseg.data.dataset import Transform, to_sample
from weakseg.data.io import DataError, check_label_values, read_label
from weakseg.data.scribbles import image_tags

__all__ = ["LabelFolderDataset"]


class LabelFolderDataset(Dataset):
    """``dataset`` with the ``label`` of sample ``id`` read from ``<label_dir>/<id>.png``.

    Args:
        dataset: a weakseg dataset (:class:`~weakseg.data.FolderDataset`,
            :class:`~weakseg.data.VOCDataset`, :class:`~weakseg.data.SyntheticDataset`) built
            with ``transform=None``; its samples give ``image_raw [C, H, W]``, ``label``,
            ``tags``, ``id`` and optionally ``mask``.
        label_dir: folder of label PNGs named by sample id, or ``None`` for the dataset's own
            labels.
        transform: the joint transform to apply after the label is chosen.
        resize: resize label maps of another size than their image to it (nearest neighbour)
            instead of raising :class:`~weakseg.data.DataError`.

    Raises (when a sample is loaded):
        DataError: a missing, unreadable or wrongly sized label file, or one with class ids
            ``>= K`` (other than 255), naming the file.

    Example::

        >>> base = FolderDataset("data/acdc-scribble", "train", supervision="unlabeled")
        >>> train = LabelFolderDataset(base, "runs/grabcut", train_transforms(256))
        >>> train[0]["label"]  # the GrabCut mask, cropped like the image
    """

    def __init__(
        self,
        dataset: Dataset,
        label_dir: str | Path | None = None,
        transform: Transform | None = None,
        *,
        resize: bool = False,
    ) -> None:
        if getattr(dataset, "transform", None) is not None:
            raise ValueError(
                "LabelFolderDataset needs the wrapped dataset without a transform (it applies "
                "the transform itself, after replacing the label); pass transform=None to it"
            )
        self.dataset = dataset
        self.label_dir = None if label_dir is None else Path(label_dir)
        self.transform = transform
        self.resize = bool(resize)
        self.class_names = list(dataset.class_names)
        self.num_classes = len(self.class_names)
        self.has_masks = bool(getattr(dataset, "has_masks", False))

    def __len__(self) -> int:
        return len(self.dataset)

    def label_path(self, sample_id: str) -> Path:
        """The label file of ``sample_id`` (``label_dir`` must be set)."""
        if self.label_dir is None:
            raise ValueError("label_dir is not set: the dataset's own labels are used")
        return self.label_dir / f"{sample_id}.png"

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]  # untransformed, full size
        label, tags = sample["label"], sample["tags"]
        if self.label_dir is not None:
            label = self._read(sample["id"], tuple(sample["image_raw"].shape[-2:]))
            if not self.has_masks:  # tags of the masks used for training
                tags = image_tags(label, self.num_classes)
        return to_sample(
            sample["id"],
            sample["image_raw"],
            label,
            sample.get("mask"),
            tags,
            self.transform,
            self.dataset.mean,
            self.dataset.std,
        )

    def _read(self, sample_id: str, size: tuple[int, int]) -> np.ndarray:
        path = self.label_path(sample_id)
        if not path.is_file():
            raise DataError(f"missing label file for id {sample_id!r} in {self.label_dir}: {path}")
        label = read_label(path, "label")
        if label.shape != size and self.resize:
            label = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
        if label.shape != size:
            raise DataError(
                f"size mismatch: label {path} is {label.shape[1]}x{label.shape[0]} (WxH) but the "
                f"image of id {sample_id!r} is {size[1]}x{size[0]}"
            )
        check_label_values(label, self.num_classes, path, "label")
        return label

    def __repr__(self) -> str:
        return f"LabelFolderDataset({self.dataset!r}, label_dir={self.label_dir})"
