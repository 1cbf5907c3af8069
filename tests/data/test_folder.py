import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from weakseg.data import DataError, FolderDataset, ScribbleStats, train_transforms
from weakseg.data.io import write_label


def test_sample_dict(folder: Path) -> None:
    data = FolderDataset(folder, "train")
    assert len(data) == 3 and data.num_classes == 3 and data.has_masks
    sample = data[0]
    assert sample["id"] == "case0"
    assert sample["image"].shape == (1, 24, 32) and sample["image"].dtype == torch.float32
    assert sample["image_raw"].dtype == torch.float32 and sample["image_raw"].max() <= 255
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (24, 32)
    assert sample["mask"].dtype == torch.int64 and sample["valid_mask"].dtype == torch.bool
    assert sample["valid_mask"].all() and sample["tags"].tolist() == [True, True, True]
    assert (sample["label"] != 255).sum() == 6 + 20 + 28
    expected = (sample["image_raw"] - 114.495) / 57.63  # gray: averaged ImageNet statistics
    torch.testing.assert_close(sample["image"], expected, rtol=1e-4, atol=1e-4)
    batch = next(iter(DataLoader(data, batch_size=2)))
    assert batch["image"].shape == (2, 1, 24, 32) and batch["id"] == ["case0", "case1"]


@pytest.mark.parametrize(
    ("supervision", "labeled"), [("full", 24 * 32), ("tags", 0), ("unlabeled", 0), ("clicks", None)]
)
def test_supervisions(folder: Path, supervision: str, labeled: int | None) -> None:
    sample = FolderDataset(folder, "train", supervision=supervision)[1]
    count = int((sample["label"] != 255).sum())
    if labeled is None:
        assert 3 <= count <= 27  # one click (3x3 at most) per object
    else:
        assert count == labeled
    assert "mask" in sample and sample["tags"].all()


def test_shortened_and_no_masks(folder: Path, folder_factory) -> None:
    short = FolderDataset(folder, "train", shorten_ratio=0.5)[0]["label"]
    full = FolderDataset(folder, "train")[0]["label"]
    assert 0 < (short != 255).sum() < (full != 255).sum()
    assert (short[short != 255] == full[short != 255]).all()
    no_masks = FolderDataset(folder, "val", load_masks=False)[0]
    assert "mask" not in no_masks and no_masks["tags"].all()  # tags from scribbles


def test_rgb_and_transform(folder_factory, tmp_path: Path) -> None:
    root = folder_factory(tmp_path / "rgb", rgb=True)
    data = FolderDataset(root, "train", transform=train_transforms(40, scale=None))
    sample = data[0]
    assert sample["image"].shape == (3, 40, 40) and sample["valid_mask"].sum() == 24 * 32
    assert (sample["mask"][~sample["valid_mask"]] == 255).all()


def test_bad_construction(folder: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        FolderDataset(folder / "nope", "train")
    with pytest.raises(DataError, match=r"split file not found: .*test\.txt \(available splits: "
                       r"train, val\)"):  # fmt: skip
        FolderDataset(folder, "test")
    with pytest.raises(ValueError, match="supervision must be one of scribbles, clicks"):
        FolderDataset(folder, "train", supervision="boxes")
    with pytest.raises(ValueError, match=r"shorten_ratio=0\.5 applies to supervision='scribbles'"):
        FolderDataset(folder, "train", supervision="full", shorten_ratio=0.5)
    with pytest.raises(DataError, match=r"supervision='full' needs full masks, but .*masks is not"):
        FolderDataset(folder, "train", supervision="full", load_masks=False)
    (folder / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"missing classes file: .*classes\.txt"):
        FolderDataset(folder, "train")


def test_missing_file_for_listed_id(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "scribbles" / "case1.png").unlink()
    with pytest.raises(DataError, match=r"missing scribble file for id 'case1' \(listed in .*"
                       r"train\.txt\): .*case1\.png"):  # fmt: skip
        FolderDataset(folder, "train")
    with caplog.at_level(logging.WARNING, logger="weakseg.data"):
        data = FolderDataset(folder, "train", skip_bad=True)
    assert [f.id for f in data.files] == ["case0", "case2"] and "case1" in caplog.text
    (folder / "masks" / "case2.png").unlink()
    with pytest.raises(DataError, match=r"missing mask file for id 'case2'"):
        FolderDataset(folder, "train", supervision="unlabeled", load_masks=True)
    with pytest.raises(DataError, match=r"missing mask file for id 'case2'"):
        FolderDataset(folder, "train", supervision="full")


def test_files_needed_only_where_used(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13: scribble training does not need masks, evaluation does not need scribbles."""
    (folder / "masks" / "case2.png").unlink()
    with caplog.at_level(logging.WARNING, logger="weakseg.data"):
        train = FolderDataset(folder, "train")  # scribbles; masks not complete: not loaded
    assert len(train) == 3 and not train.has_masks and "mask" not in train[2]
    assert "1 of 3 ids have no mask file" in caplog.text and "case2.png" in caplog.text
    for i in range(3):
        (folder / "scribbles" / f"case{i}.png").unlink()
    val = FolderDataset(folder, "val", supervision="unlabeled", load_masks=True)
    assert val.has_masks and (val[0]["mask"] != 255).all()
    with pytest.raises(DataError, match=r"missing scribble file for id 'case0'"):
        FolderDataset(folder, "val")


def _corrupt(folder: Path, kind: str) -> str:
    if kind == "size":
        write_label(folder / "scribbles" / "case1.png", np.full((10, 10), 255, np.uint8))
        return (
            r"size mismatch: image .*case1\.png is 32x24 \(WxH\) but scribble .*case1\.png is 10x10"
        )
    if kind == "values":
        write_label(folder / "masks" / "case1.png", np.full((24, 32), 7, np.uint8))
        return r"mask file .*case1\.png holds label values \{7\} >= num_classes=3"
    path = folder / "images" / "case1.png"
    path.write_bytes(path.read_bytes()[:60])
    return r"unreadable or truncated image file .*case1\.png"


@pytest.mark.parametrize("kind", ["size", "values", "truncated"])
def test_bad_files_raise_or_skip(folder: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    message = _corrupt(folder, kind)
    with pytest.raises(DataError, match=message):
        FolderDataset(folder, "train")[1]
    data = FolderDataset(folder, "train", skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="weakseg.data"):
        assert data[1]["id"] == "case2"  # the bad sample is replaced by the next good one
    assert "case1" in caplog.text
    problems = data.validate()
    assert [p[0] for p in problems] == ["case1"] and len(data) == 2


def test_every_sample_bad(folder: Path) -> None:
    for i in range(3):
        write_label(folder / "masks" / f"case{i}.png", np.full((24, 32), 9, np.uint8))
    with pytest.raises(DataError, match="every one of the 3 samples is bad"):
        FolderDataset(folder, "train", skip_bad=True)[0]
    with pytest.raises(IndexError, match="index 5 out of range for a dataset of 3 samples"):
        FolderDataset(folder, "train")[5]


def test_acdc_whole_train_split(acdc_root: Path) -> None:
    """Issue 5: every train slice loads and the labeled fraction matches the README (~1%)."""
    data = FolderDataset(acdc_root, "train")
    assert len(data) == 1282 and data.class_names[3] == "left_ventricle"
    stats = ScribbleStats(data.num_classes)
    sizes = set()
    for index in range(len(data)):
        image, scribbles, mask = data.load(index)
        sizes.add(image.shape)
        stats.update(scribbles, mask)
    summary = stats.summary()
    assert 0.009 < summary["labeled_fraction"] < 0.012  # measured 1.035%
    assert 0.002 < summary["labeled_fraction_per_image"]["min"]
    assert summary["labeled_fraction_per_image"]["max"] < 0.025  # README: 0.2-2.1% (2.3% max)
    assert len(sizes) > 1 and all(s[0] == 1 for s in sizes)
    sample = data[0]
    assert sample["image"].shape[0] == 1 and Image.open(data.files[0].image).mode == "L"


def test_acdc_loader_yields_every_sample(acdc_root: Path) -> None:
    """Batched loading with 2 workers delivers each sample once (throughput: benchmarks/)."""
    data = FolderDataset(acdc_root, "train", transform=train_transforms(224))
    subset = torch.utils.data.Subset(data, range(32))
    loader = DataLoader(subset, batch_size=8, num_workers=2)
    ids = [sample_id for batch in loader for sample_id in batch["id"]]
    assert sorted(ids) == sorted(data[i]["id"] for i in range(32))
