from pathlib import Path

import pytest

from weakseg.data import DataError, VOCDataset


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_scribbles_from_any_root(voc_root: Path, sub: str) -> None:
    data = VOCDataset(voc_root / sub, "train_aug")
    assert len(data) == 2 and data.num_classes == 21 and data.has_masks
    sample = data[0]
    assert sample["image"].shape == (3, 20, 30) and sample["id"] == "2007_000001"
    assert (sample["label"] == 15).sum() == 6 and (sample["label"] == 0).sum() == 28
    assert (sample["mask"] == 255).sum() == 10  # VOC object boundaries stay ignored
    assert sample["tags"].nonzero().flatten().tolist() == [0, 15]


@pytest.mark.parametrize(
    ("supervision", "labeled"), [("full", 590), ("tags", 0), ("unlabeled", 0), ("clicks", None)]
)
def test_voc_supervisions(voc_root: Path, supervision: str, labeled: int | None) -> None:
    sample = VOCDataset(voc_root, "val", supervision=supervision)[0]
    count = int((sample["label"] != 255).sum())
    assert count == labeled if labeled is not None else 2 <= count <= 18


def test_voc_shortened_and_scribble_dir(voc_root: Path, tmp_path: Path) -> None:
    short = VOCDataset(voc_root, "train", shorten_ratio=0.5)[0]["label"]
    assert 0 < (short != 255).sum() < 34
    scribble_dir = voc_root / "VOCdevkit" / "VOC2012" / "pascal_2012_scribble"
    moved = tmp_path / "elsewhere"
    scribble_dir.rename(moved)
    with pytest.raises(DataError, match=r"needs the ScribbleSup scribbles, but .*pascal_2012_"):
        VOCDataset(voc_root, "train")
    sample = VOCDataset(voc_root, "train", scribble_dir=moved)[0]
    assert (sample["label"] != 255).sum() == 34


def test_voc_errors(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no PASCAL VOC 2012 tree under .*VOCdevkit/VOC2012/JPEG"):
        VOCDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"split file not found: .*trainval\.txt \(available "
                       r"splits: train, train_aug, val\)"):  # fmt: skip
        VOCDataset(voc_root, "trainval")
    voc = voc_root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DataError, match=r"missing image file for id '2007_000002' .*\.jpg"):
        VOCDataset(voc_root, "train_aug")
    assert len(VOCDataset(voc_root, "train_aug", skip_bad=True)) == 1
    with pytest.raises(DataError, match=r"supervision='full' needs full masks \(load_masks"):
        VOCDataset(voc_root, "train", supervision="full", load_masks=False)
