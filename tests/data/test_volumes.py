"""Volumes in the folder format: NIfTI and WSL4MIS-style HDF5, slicing, spacing, intensities,
files needed only where used, and the NIfTI writer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from weakseg.data import DataError, FolderDataset
from weakseg.data.synthetic_volumes import synthetic_volume, write_synthetic_volumes
from weakseg.data.volumes import (
    VolumeCache,
    check_volume_pattern,
    file_id,
    read_volume,
    scale_intensity,
    through_plane_axis,
    volume_key,
    write_label_volume,
)

nibabel = pytest.importorskip("nibabel")
h5py = pytest.importorskip("h5py")


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    return write_synthetic_volumes(tmp_path / "vol", n_train=2, n_val=1, shape=(20, 16, 5))


def test_file_id_and_axis() -> None:
    assert file_id("a/b.nii.gz") == "b" and file_id("x.h5") == "x" and file_id("p.png") == "p"
    assert through_plane_axis((216, 256, 10), (1.5, 1.5, 10.0)) == 2
    assert through_plane_axis((10, 256, 216), (10.0, 1.5, 1.5)) == 0
    assert through_plane_axis((30, 30, 9), (1.0, 1.0, 1.0)) == 2  # tie: fewest voxels
    assert through_plane_axis((12, 256, 224), None) == 0
    with pytest.raises(ValueError, match=r"a volume has 3 axes, got shape \(4, 4\)"):
        through_plane_axis((4, 4), None)


def test_scale_intensity_by_hand() -> None:
    array = np.arange(101, dtype=np.float32)  # percentile p of 0..100 is p
    scaled = scale_intensity(array, (10, 60))
    assert scaled[0] == 0 and scaled[10] == 0 and scaled[60] == 255 and scaled[100] == 255
    assert scaled[35] == pytest.approx(127.5)
    assert (scale_intensity(np.full(5, 3.0), (1, 99)) == 0).all()
    with pytest.raises(ValueError, match=r"percentiles must be \(low, high\) with 0 <= low"):
        scale_intensity(array, (50, 10))


def test_volume_key_patterns() -> None:
    assert volume_key("patient001_frame01_slice_3") == ("patient001_frame01", 3)
    assert volume_key("scan7_slice12") == ("scan7", 12)
    assert volume_key("2007_000032") == ("2007_000032", None)  # no match: its own volume
    assert volume_key("ct_004-017", r"^(?P<volume>ct_\d+)-(?P<slice>\d+)$") == ("ct_004", 17)
    assert volume_key("a_b_c", r"^(\w)_") == ("a", None)
    with pytest.raises(ValueError, match=r"volume_pattern '\(' is not a valid regular"):
        check_volume_pattern("(")


def test_nifti_slices_spacing_and_intensity(volumes: Path) -> None:
    train = FolderDataset(volumes, "train")  # scribbles, no masks/ file for these ids
    assert len(train) == 2 * 5 and not train.has_masks and train.is_volumetric
    assert train.volume_ids() == ["case_000", "case_001"]
    sample = train[7]
    assert sample["id"] == "case_001_slice_2" and sample["volume"] == "case_001"
    assert sample["slice"] == 2 and sample["image_raw"].shape == (1, 20, 16)
    torch.testing.assert_close(
        sample["spacing"], torch.tensor([8.0, 1.5, 1.5], dtype=torch.float64)
    )
    image, _ = synthetic_volume((20, 16, 5), 1)
    torch.testing.assert_close(sample["image_raw"][0], torch.from_numpy(image[..., 2]))
    assert "mask" not in sample and (sample["label"] != 255).any()
    scaled = FolderDataset(volumes, "train", intensity_percentiles=(1, 99))
    raw = scaled[7]["image_raw"]
    assert raw.min() == 0 and raw.max() == 255
    across = FolderDataset(volumes, "train", slice_axis=0)  # 20 slices of 16 x 5
    assert len(across) == 40 and across[0]["image_raw"].shape == (1, 16, 5)
    torch.testing.assert_close(
        across[0]["spacing"], torch.tensor([1.5, 1.5, 8.0], dtype=torch.float64)
    )


def test_eval_split_needs_masks_not_scribbles(volumes: Path) -> None:
    val = FolderDataset(volumes, "val", supervision="unlabeled", load_masks=True)
    assert len(val) == 5 and val.has_masks and set(val[2]["mask"].unique().tolist()) == {0, 1, 2, 3}
    with pytest.raises(DataError, match=r"missing scribble file for id 'case_002_slice_0'"):
        FolderDataset(volumes, "val")
    with pytest.raises(DataError, match=r"missing mask file for id 'case_000_slice_0' .*train\.txt"
                       r"\): .*masks/case_000\.nii\.gz"):  # fmt: skip
        FolderDataset(volumes, "train", supervision="full")
    with pytest.raises(DataError, match=r"missing image file for id 'case_009'"):
        (volumes / "splits" / "extra.txt").write_text("case_009\n")
        FolderDataset(volumes, "extra", supervision="unlabeled")


def test_bad_volumes(volumes: Path, caplog: pytest.LogCaptureFixture) -> None:
    affine = np.eye(4)
    mask_path = volumes / "masks" / "case_002.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((20, 16, 4), np.uint8), affine), str(mask_path))
    with pytest.raises(DataError, match=r"size mismatch: image volume .*case_002\.nii\.gz has shape"
                       r" \(5, 20, 16\) .*but mask volume .*has \(4, 20, 16\)"):  # fmt: skip
        FolderDataset(volumes, "val", supervision="unlabeled")[0]
    nibabel.save(nibabel.Nifti1Image(np.full((20, 16, 5), 0.5), affine), str(mask_path))
    with pytest.raises(DataError, match=r"mask file .*case_002\.nii\.gz holds non-integer values"):
        FolderDataset(volumes, "val", supervision="unlabeled")[0]
    nibabel.save(nibabel.Nifti1Image(np.full((20, 16, 5), 7, np.uint8), affine), str(mask_path))
    with pytest.raises(DataError, match=r"mask file .*case_002\.nii\.gz holds label values \{7\}"):
        FolderDataset(volumes, "val", supervision="unlabeled")[0]
    (volumes / "images" / "case_000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"unreadable image file .*case_000\.nii\.gz"):
        FolderDataset(volumes, "train")
    with caplog.at_level(logging.WARNING, logger="weakseg.data"):
        kept = FolderDataset(volumes, "train", skip_bad=True)
    assert kept.volume_ids() == ["case_001"] and "case_000" in caplog.text
    with pytest.raises(DataError, match=r"slice_axis=3 is out of range"):
        FolderDataset(volumes, "val", supervision="unlabeled", slice_axis=3)


def test_mixed_split_is_an_error(volumes: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(volumes / "images" / "flat.png")
    (volumes / "splits" / "mixed.txt").write_text("case_000\nflat\n")
    with pytest.raises(DataError, match=r"mixes volume files .*case_000\.nii\.gz.* and 2D images "
                       r".*flat\.png"):  # fmt: skip
        FolderDataset(volumes, "mixed", supervision="unlabeled")


def test_wsl4mis_h5_all_in_one(tmp_path: Path) -> None:
    """An .h5 image holding image, scribble and label (WSL4MIS) needs no other folder."""
    root = tmp_path / "h5"
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    image, mask = synthetic_volume((20, 16, 4), 0)
    image, mask = np.moveaxis(image, -1, 0) / 900.0, np.moveaxis(mask, -1, 0)  # (S, H, W) in [0, 1]
    scribble = np.full_like(mask, 255)
    scribble[:, 10, 4:12] = mask[:, 10, 4:12]
    with h5py.File(root / "images" / "patient001_frame01.h5", "w") as handle:
        handle["image"], handle["label"], handle["scribble"] = image, mask, scribble
    (root / "splits" / "train.txt").write_text("patient001_frame01\n")
    (root / "classes.txt").write_text("bg\nrv\nmyo\nlv\n")
    train = FolderDataset(root, "train", intensity_percentiles=(0, 100))
    assert len(train) == 4 and train.has_masks  # the label dataset of the same file
    sample = train[1]
    assert sample["image_raw"].shape == (1, 20, 16) and torch.isnan(sample["spacing"]).all()
    assert (sample["label"][10, 4:12] == torch.from_numpy(mask[1, 10, 4:12]).long()).all()
    assert (sample["mask"] == torch.from_numpy(mask[1]).long()).all()
    with h5py.File(root / "images" / "patient001_frame01.h5", "a") as handle:
        handle["image"].attrs["spacing"] = [5.0, 1.2, 1.2]
    spaced = FolderDataset(root, "train")[0]["spacing"]
    torch.testing.assert_close(spaced, torch.tensor([5.0, 1.2, 1.2], dtype=torch.float64))
    with h5py.File(root / "images" / "patient001_frame01.h5", "a") as handle:
        del handle["image"]
    with pytest.raises(DataError, match=r"image file .*\.h5 has no dataset 'image' \(it holds: "):
        FolderDataset(root, "train")


def test_write_label_volume_keeps_affine(volumes: Path, tmp_path: Path) -> None:
    reference = volumes / "images" / "case_000.nii.gz"
    volume = read_volume(reference)
    labels = (volume.array > 400).astype(np.uint8)  # (S, H, W)
    out = write_label_volume(tmp_path / "out" / "pred.nii.gz", labels, reference, volume.axis)
    written = nibabel.load(str(out))
    np.testing.assert_array_equal(written.affine, nibabel.load(str(reference)).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.moveaxis(labels, 0, -1))
    assert written.get_data_dtype() == np.uint8
    with pytest.raises(DataError, match=r"prediction of shape \(20, 16, 4\) does not fit the "
                       r"volume .*case_000\.nii\.gz of shape \(20, 16, 5\)"):  # fmt: skip
        write_label_volume(tmp_path / "bad.nii.gz", labels[:4], reference, volume.axis)


def test_volume_cache_drops_least_recent(volumes: Path) -> None:
    paths = sorted((volumes / "images").iterdir())
    one = read_volume(paths[0]).array.nbytes
    cache = VolumeCache(max_bytes=2 * one)
    first = cache.get(paths[0], "image", None, None)
    cache.get(paths[1], "image", None, None)
    assert cache.get(paths[0], "image", None, None) is first  # cached
    cache.get(paths[2], "image", None, None)  # drops paths[1], the least recently used
    assert cache.get(paths[0], "image", None, None) is first
    assert len(cache._items) == 2 and str(paths[1]) not in {k[0] for k in cache._items}
