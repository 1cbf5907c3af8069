"""Slabs of adjacent slices (:mod:`weakseg.data.slabs`): grouping into runs, the tiling of an
epoch, the samples, and one augmentation for all the slices of a slab."""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.data import DataError, FolderDataset, SlabDataset, train_transforms
from weakseg.data.io import write_label
from weakseg.data.slabs import slab_starts, slice_runs
from weakseg.data.transforms import ScribbleBoxPrior

nibabel = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training volumes of 7 and 5 slices (NIfTI, slice axis last, 8 mm apart)."""
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = tmp_path_factory.mktemp("mri")
    write_synthetic_volumes(root / "a", n_train=2, n_val=0, shape=(24, 20, 7), seed=0)
    write_synthetic_volumes(root / "b", n_train=1, n_val=0, shape=(24, 20, 5), seed=1)
    for sub in ("images", "scribbles"):  # case_001: 5 slices
        (root / "b" / sub / "case_000.nii.gz").replace(root / "a" / sub / "case_001.nii.gz")
    return root / "a"


def _slice_files(root: Path, slices: dict[str, list[int]], size: tuple[int, int] = (20, 24)):
    """2D PNG slices ``<volume>_slice_<n>`` with scribbles, K = 2, split ``train``."""
    for sub in ("images", "scribbles", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for volume, numbers in slices.items():
        for number in numbers:
            sample_id = f"{volume}_slice_{number}"
            pixels = np.full(size, 10 * number, dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{sample_id}.png")
            scribbles = np.full(size, 255, dtype=np.uint8)
            scribbles[2, 2:8] = 0
            scribbles[10, 5:15] = 1
            write_label(root / "scribbles" / f"{sample_id}.png", scribbles)
            ids.append(sample_id)
    (root / "splits" / "train.txt").write_text("".join(f"{i}\n" for i in reversed(ids)))
    (root / "classes.txt").write_text("background\nobject\n")
    return root


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 7, 9, 10, 13])
def test_slab_starts_cover_every_slice_once_or_twice(length: int, slices: int) -> None:
    if length < slices:
        with pytest.raises(ValueError, match=f"a run of {length} slices holds no slab"):
            slab_starts(length, slices, np.random.default_rng(0))
        return
    seen = set()
    for seed in range(12):
        starts = slab_starts(length, slices, np.random.default_rng(seed))
        assert len(starts) == math.ceil(length / slices)
        assert starts[0] == 0 and starts[-1] == length - slices
        assert all(1 <= b - a <= slices for a, b in itertools.pairwise(starts))
        covered = Counter(i for s in starts for i in range(s, s + slices))
        assert set(covered) == set(range(length)) and max(covered.values()) <= 2
        seen.add(tuple(starts))
    # the overlaps move between epochs when there is a choice: S does not divide n and there
    # are 2 junctions or more (with 1, the overlap n mod S has one place)
    assert (len(seen) > 1) == (length % slices != 0 and math.ceil(length / slices) >= 3)


def test_runs_of_volume_files(volumes: Path) -> None:
    dataset = FolderDataset(volumes, "train")
    runs = slice_runs(dataset)
    assert [(r.volume, r.first, len(r.indices)) for r in runs] == [
        ("case_000", 0, 7),
        ("case_001", 0, 5),
    ]
    assert [dataset.files[i].slice for i in runs[1].indices] == list(range(5))


def test_runs_of_slice_files_by_pattern_and_gaps(tmp_path: Path, caplog) -> None:
    root = _slice_files(tmp_path, {"p1_frame01": [0, 1, 2, 3, 5, 6], "p2_frame01": [4, 5, 6, 7]})
    dataset = FolderDataset(root, "train")
    runs = slice_runs(dataset)
    found = sorted((r.volume, r.first, [dataset.files[i].id for i in r.indices]) for r in runs)
    assert found == [
        ("p1_frame01", 0, [f"p1_frame01_slice_{n}" for n in (0, 1, 2, 3)]),
        ("p1_frame01", 5, ["p1_frame01_slice_5", "p1_frame01_slice_6"]),
        ("p2_frame01", 4, [f"p2_frame01_slice_{n}" for n in (4, 5, 6, 7)]),
    ]
    with caplog.at_level(logging.WARNING, logger="weakseg.data"):
        slabs = SlabDataset(dataset, 3)
    assert "1 of 3 runs of consecutive slices are shorter (2 slices" in caplog.text
    assert len(slabs) == 4  # 2 + 2: the run of slices 5-6 gives none
    for index in range(len(slabs)):
        sample = slabs[index]
        first = int(sample["slices"][0])
        assert sample["slices"].tolist() == [first, first + 1, first + 2]
        assert sample["id"] == f"{sample['volume']}_slices_{first}-{first + 2}"
        # the PNGs hold 10 * slice number: slices in order, of that volume
        levels = sample["image_raw"][:, 0, 0, 0].tolist()
        assert levels == [10.0 * n for n in sample["slices"].tolist()]
        assert "spacing" not in sample


def test_slice_number_twice_is_an_error(tmp_path: Path) -> None:
    root = _slice_files(tmp_path, {"v": [1, 2]})
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "images" / "v_slice01.png")
    write_label(root / "scribbles" / "v_slice01.png", np.full((20, 24), 255, np.uint8))
    (root / "splits" / "train.txt").write_text("v_slice_1\nv_slice_2\nv_slice01\n")
    with pytest.raises(DataError, match="'v_slice_1' and 'v_slice01' are both slice 1 of volume"):
        SlabDataset(FolderDataset(root, "train"), 2)


def test_epochs_keep_their_length_and_cover_every_slice(volumes: Path) -> None:
    dataset = FolderDataset(volumes, "train", intensity_percentiles=(0.5, 99.5))
    slabs = SlabDataset(dataset, 3, seed=4)
    assert len(slabs) == 3 + 2  # ceil(7 / 3) + ceil(5 / 3)
    tilings = set()
    for epoch in range(6):
        slabs.set_epoch(epoch)
        assert len(slabs) == 5
        count = Counter()
        tiling = []
        for index in range(len(slabs)):
            run, start = slabs.members(index)
            count.update(run.indices[start : start + 3])
            tiling.append((run.volume, start))
        assert set(count) == set(range(12)) and max(count.values()) <= 2
        tilings.add(tuple(tiling))
    assert len(tilings) > 1  # the overlaps move between epochs
    slabs.set_epoch(2)
    again = SlabDataset(dataset, 3, seed=4)
    again.set_epoch(2)
    assert [slabs.members(i) for i in range(5)] == [again.members(i) for i in range(5)]


def test_slab_sample_is_its_slices_stacked(volumes: Path) -> None:
    dataset = FolderDataset(volumes, "train", intensity_percentiles=(0.5, 99.5), channels=1)
    slabs = SlabDataset(dataset, 3, seed=1)
    sample = slabs[4]
    run, start = slabs.members(4)
    singles = [dataset[i] for i in run.indices[start : start + 3]]
    assert sample["image"].shape == (3, 1, 24, 20) and sample["label"].shape == (3, 24, 20)
    for key in ("image", "image_raw", "label", "valid_mask", "tags"):
        assert torch.equal(sample[key], torch.stack([s[key] for s in singles])), key
    assert sample["volume"] == run.volume == singles[0]["volume"]
    assert sample["slices"].tolist() == [s["slice"] for s in singles]
    assert torch.equal(sample["spacing"], singles[0]["spacing"])  # (8, 1.5, 1.5) mm
    assert sample["spacing"].tolist() == [8.0, 1.5, 1.5]
    with pytest.raises(IndexError, match="index 5 out of range for 5 slabs"):
        slabs[5]
    with pytest.raises(ValueError, match="slices must be an integer >= 1, got 0"):
        SlabDataset(dataset, 0)


def test_one_augmentation_for_all_slices(tmp_path: Path) -> None:
    """A volume whose slices are copies stays a stack of copies through every random
    transform (scale, rotation, pad, crop, rot90 + flip, hflip, jitter, box prior)."""
    from weakseg.data.synthetic_volumes import synthetic_volume

    root = tmp_path / "copies"
    for sub in ("images", "scribbles", "splits"):
        (root / sub).mkdir(parents=True)
    image, mask = synthetic_volume((30, 26, 1), seed=3)
    scribbles = np.full(mask.shape, 255, np.uint8)
    scribbles[10:12, 8:14] = mask[10:12, 8:14]
    scribbles[2, 3:20] = 0
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    for name, array in (("images", image), ("scribbles", scribbles)):
        copies = np.repeat(array, 4, axis=-1)  # [H, W, 4]: 4 equal slices
        nibabel.save(nibabel.Nifti1Image(copies, affine), str(root / name / "v.nii.gz"))
    (root / "splits" / "train.txt").write_text("v\n")
    (root / "classes.txt").write_text("bg\nrv\nmyo\nlv\n")
    transform = train_transforms(
        24, (0.7, 1.4), hflip=0.5, jitter=0.3, mean=[127.5], rotation=30, rot90_flip=True
    )
    transform.transforms.insert(0, ScribbleBoxPrior(2))
    dataset = FolderDataset(root, "train", transform=transform, mean=[127.5], std=[60.0])
    slabs = SlabDataset(dataset, 4)
    changed = 0
    for seed in range(8):
        random.seed(seed)
        torch.manual_seed(seed)
        sample = slabs[0]
        for key in ("image", "image_raw", "label", "valid_mask"):
            for index in range(1, 4):
                assert torch.equal(sample[key][index], sample[key][0]), (seed, key)
        changed += not bool(sample["valid_mask"].all())  # padding or rotated corners
    assert changed > 0
