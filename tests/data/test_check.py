"""weakseg.data.check: split reports with every problem and its file, and the fast label check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.data import DataError
from weakseg.data.check import (
    DuplicateImages,
    check_dataset,
    check_split,
    check_split_labels,
    find_duplicate_images,
)
from weakseg.data.io import write_label


def test_clean_folder_report(folder: Path) -> None:
    report = check_split(folder, "train")
    assert report.ids == 3 and report.slices == 3 and not report.volumetric
    assert report.shapes == {(1, 24, 32): 3} and report.spacings == {None: 3}
    assert report.files == {"scribble": 3, "mask": 3} and report.problems == []
    assert report.classes == {"scribble": {0, 1, 2}, "mask": {0, 1, 2}}
    # 6 + 20 + 28 scribbled pixels of 24 x 32 per image (tests/data/conftest.py)
    assert report.labeled_fraction == pytest.approx(54 / 768)
    assert report.usable_for() == ["scribble training", "evaluation and full supervision"]
    assert [r.name for r in check_dataset(folder)] == ["train", "val"]


def test_every_problem_with_its_file(folder: Path) -> None:
    (folder / "images" / "case0.png").unlink()
    write_label(folder / "scribbles" / "case1.png", np.full((10, 10), 255, np.uint8))
    write_label(folder / "masks" / "case2.png", np.full((24, 32), 7, np.uint8))
    (folder / "masks" / "case1.png").unlink()
    problems = {(p.id, str(p)) for p in check_split(folder, "train").problems}
    messages = " | ".join(m for _, m in sorted(problems))
    assert "case0.*: missing image file" in messages
    assert "scribble has shape (10, 10) but its image" in messages
    assert "masks/case2.png: mask file" in messages and "holds label values {7}" in messages
    assert "only 2 of 3 ids of split 'train' have a mask file" in messages
    assert len(problems) == 4


def test_identical_images_within_and_across_splits(folder: Path) -> None:
    assert check_dataset(folder)[0].duplicates == [
        DuplicateImages((("train", "case0"), ("val", "case0")), 1)  # val lists train's case0
    ]
    shutil.copy(folder / "images" / "case2.png", folder / "images" / "case1.png")
    train, val = check_dataset(folder)
    across, within = train.duplicates
    assert val.duplicates == [across] and across.across_splits
    assert within == DuplicateImages((("train", "case1"), ("train", "case2")), 1)
    assert str(within) == "train/case1 = train/case2: 1 identical image"
    assert train.problems == [] and val.problems == []  # reported, not a problem


def test_identical_slices_are_grouped_by_volume(tmp_path: Path) -> None:
    root = tmp_path / "slices"
    for sub in ("images", "splits"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"patient00{p}_frame01_slice_{n}" for p in (1, 2, 3) for n in range(3)]
    for sample_id in ids:
        pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{sample_id}.png")
    for n in range(2):  # patient002's first two slices are patient001's
        shutil.copy(
            root / "images" / f"patient001_frame01_slice_{n}.png",
            root / "images" / f"patient002_frame01_slice_{n}.png",
        )
    blank = np.zeros((8, 8), np.uint8)  # constant slices are alike by nature: left out
    Image.fromarray(blank).save(root / "images" / "patient001_frame01_slice_2.png")
    Image.fromarray(blank).save(root / "images" / "patient003_frame01_slice_2.png")
    (root / "splits" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("a\nb\n")
    (report,) = check_dataset(root)
    assert report.duplicates == [
        DuplicateImages((("train", "patient001_frame01"), ("train", "patient002_frame01")), 2)
    ]
    assert find_duplicate_images([report]) == report.duplicates


def test_missing_split_and_classes(folder: Path) -> None:
    assert "split file not found" in str(check_split(folder, "nope").problems[0])
    (folder / "classes.txt").unlink()
    assert "missing classes file" in str(check_split(folder, "train").problems[0])
    with pytest.raises(DataError, match="dataset folder not found"):
        check_dataset(folder / "absent")


def test_fast_label_check(folder: Path) -> None:
    assert check_split_labels(folder, "train", 3) == []
    problems = check_split_labels(folder, "train", 2)  # class 2 is out of range now
    assert {p.id for p in problems} == {"case0", "case1", "case2"} and len(problems) == 6
    assert "holds label values {2} >= num_classes=2" in problems[0].message
    scribbles = np.full((24, 32), 3, np.uint8)  # WSL4MIS: K marks the unlabeled pixels
    write_label(folder / "scribbles" / "case0.png", scribbles)
    (problem,) = check_split_labels(folder, "train", 3)
    assert str(problem).startswith(str(folder / "scribbles" / "case0.png"))
    assert "how WSL4MIS marks unlabeled pixels: map it to 255" in problem.message
    with pytest.raises(DataError, match="split file not found"):
        check_split_labels(folder, "test", 3)


def test_volumes_report(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = write_synthetic_volumes(tmp_path / "v", n_train=2, n_val=1, shape=(20, 16, 5))
    train, val = check_split(root, "train"), check_split(root, "val")
    assert train.volumetric and train.ids == train.volumes == 2 and train.slices == 10
    assert train.shapes == {(5, 20, 16): 2} and train.spacings == {(8.0, 1.5, 1.5): 2}
    assert train.usable_for() == ["scribble training"] and train.intensity[1] > 255
    assert val.usable_for() == ["evaluation and full supervision"] and val.problems == []
    assert val.classes["mask"] == {0, 1, 2, 3}
    assert check_split_labels(root, "val", 3)[0].message.count("{3}") == 1


def test_h5_labels_inside_the_image_file(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "h5"
    for sub in ("images", "splits"):
        (root / sub).mkdir(parents=True)
    with h5py.File(root / "images" / "p1.h5", "w") as handle:
        handle["image"] = np.zeros((3, 8, 8), np.float32)
        handle["label"] = np.ones((3, 8, 8), np.uint8)
        handle["scribble"] = np.full((3, 8, 8), 4, np.uint8)  # WSL4MIS: K = unlabeled
    (root / "splits" / "train.txt").write_text("p1\n")
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    report = check_split(root, "train")
    assert report.files == {"scribble": 1, "mask": 1} and report.shapes == {(3, 8, 8): 1}
    assert "holds label values {4} >= num_classes=4" in str(report.problems[0])
    (problem,) = check_split_labels(root, "train", 4)
    assert problem.path == root / "images" / "p1.h5" and "map it to 255" in problem.message
