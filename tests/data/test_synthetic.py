from pathlib import Path

import numpy as np
import pytest
import torch

from weakseg.data import (
    SYNTHETIC_CLASSES,
    FolderDataset,
    ScribbleStats,
    SyntheticDataset,
    write_synthetic_dataset,
)


def test_deterministic_by_seed() -> None:
    a, b = SyntheticDataset(4, 64, seed=1), SyntheticDataset(4, 64, seed=1, cache=False)
    for i in range(4):
        assert torch.equal(a[i]["image_raw"], b[i]["image_raw"])
        assert torch.equal(a[i]["label"], b[i]["label"])
    assert not torch.equal(a[0]["image_raw"], SyntheticDataset(4, 64, seed=2)[0]["image_raw"])


def test_samples_classes_and_labeled_fraction() -> None:
    data = SyntheticDataset(24, (64, 80), seed=0)
    stats = ScribbleStats(4)
    present = set()
    for i in range(len(data)):
        sample = data[i]
        assert sample["image"].shape == (3, 64, 80) and sample["mask"].shape == (64, 80)
        labeled = sample["label"] != 255
        assert (sample["label"][labeled] == sample["mask"][labeled]).all()
        present |= set(sample["mask"].unique().tolist())
        stats.update(sample["label"].numpy(), sample["mask"].numpy())
    assert present == {0, 1, 2, 3} and len(SYNTHETIC_CLASSES) == 4
    assert 0.02 < stats.summary()["labeled_fraction"] < 0.08


def test_objects_differ_by_colour_and_texture() -> None:
    """Each class has its own mean colour, and a texture: its pixels vary more than the
    smooth background's."""
    data = SyntheticDataset(30, 64, seed=0)
    colours, spread = {k: [] for k in range(4)}, {k: [] for k in range(4)}
    for i in range(len(data)):
        image, mask, _ = data.generate(i)
        for k in np.unique(mask):
            pixels = image[mask == k].astype(np.float64)
            colours[k].append(pixels.mean(0))
            spread[k].append(pixels.std(0).mean())
    means = np.stack([np.mean(colours[k], 0) for k in range(1, 4)])
    assert np.abs(means[:, None] - means[None]).sum(-1).max() > 60
    for k in range(1, 4):
        assert np.mean(spread[k]) > 10


def test_write_folder_roundtrip(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "syn", n_train=3, n_val=2, size=64, seed=5)
    train = FolderDataset(root, "train")
    val = FolderDataset(root, "val")
    reference = SyntheticDataset(5, 64, seed=5)
    assert len(train) == 3 and len(val) == 2 and train.class_names == list(SYNTHETIC_CLASSES)
    for data, offset in ((train, 0), (val, 3)):
        for i in range(len(data)):
            got, want = data[i], reference[i + offset]
            assert got["id"] == want["id"]
            for key in ("image_raw", "image", "label", "mask"):
                torch.testing.assert_close(got[key], want[key])


def test_errors() -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        SyntheticDataset(-1)
    with pytest.raises(ValueError, match="size must be an int >= 16"):
        SyntheticDataset(2, 8)
    with pytest.raises(IndexError, match="index 2 out of range"):
        SyntheticDataset(2)[2]
