"""weakseg.data.label_folder: labels from a folder of full masks, before the joint transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakseg.data import DataError, LabelFolderDataset, SyntheticDataset, train_transforms
from weakseg.data.io import write_label


def _base(**kwargs) -> SyntheticDataset:
    return SyntheticDataset(2, 24, seed=3, **kwargs)


def test_passes_labels_through_without_label_dir() -> None:
    base = _base()
    wrapped = LabelFolderDataset(base, None)
    for key in ("image", "image_raw", "label", "mask", "valid_mask", "tags"):
        torch.testing.assert_close(wrapped[1][key], base[1][key])
    assert wrapped[1]["id"] == base[1]["id"] == "synthetic_00001"
    assert len(wrapped) == 2 and wrapped.num_classes == 4 and wrapped.has_masks


def test_reads_the_folder_masks_before_the_transform(tmp_path) -> None:
    mask = np.zeros((24, 24), dtype=np.uint8)
    mask[:, :5] = 3
    mask[0, 0] = 255
    write_label(tmp_path / "synthetic_00000.png", mask)
    flip = train_transforms(24, scale=None, hflip=1.0)  # always flips
    wrapped = LabelFolderDataset(_base(), tmp_path, flip)
    sample = wrapped[0]
    torch.testing.assert_close(sample["label"], torch.from_numpy(mask).long().flip(-1))
    unflipped = _base()[0]
    torch.testing.assert_close(sample["image_raw"], unflipped["image_raw"].flip(-1))
    torch.testing.assert_close(sample["mask"], unflipped["mask"].flip(-1))


def test_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"without a transform"):
        LabelFolderDataset(_base(transform=train_transforms(24)), tmp_path)
    wrapped = LabelFolderDataset(_base(), tmp_path)
    with pytest.raises(DataError, match=r"missing label file for id 'synthetic_00000' in .*"):
        wrapped[0]
    write_label(tmp_path / "synthetic_00000.png", np.zeros((20, 24), dtype=np.uint8))
    with pytest.raises(DataError, match=r"size mismatch: label .*synthetic_00000.png is 24x20"):
        wrapped[0]
    write_label(tmp_path / "synthetic_00000.png", np.full((24, 24), 7, dtype=np.uint8))
    with pytest.raises(
        DataError, match=r"label file .*synthetic_00000.png holds label values \{7\}"
    ):
        wrapped[0]


def test_resize_reads_labels_stored_at_another_size(tmp_path) -> None:
    cues = np.full((12, 12), 255, dtype=np.uint8)  # half the 24 px image, e.g. SEC's cues
    cues[0, :] = 0
    cues[6, 3] = 2
    write_label(tmp_path / "synthetic_00000.png", cues)
    sample = LabelFolderDataset(_base(), tmp_path, resize=True)[0]
    expected = torch.from_numpy(cues).long().repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(sample["label"], expected)  # nearest neighbour
