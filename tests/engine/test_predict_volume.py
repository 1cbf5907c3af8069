"""weakseg.engine.predict_volume: a volume segmented slice by slice, written as NIfTI with the
input's affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from weakseg.engine.predict_volume import predict_volume, write_volume_prediction

nibabel = pytest.importorskip("nibabel")


class Threshold(nn.Module):
    """Class 1 where the normalized input is above 0, else class 0 (a 2-class 'network')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


def test_predict_and_write_nifti(tmp_path: Path) -> None:
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = write_synthetic_volumes(tmp_path / "v", n_train=1, n_val=0, shape=(20, 16, 5))
    path = root / "images" / "case_000.nii.gz"
    volume, labels = predict_volume(Threshold(), path, mean=[400.0], std=[100.0], batch_size=2)
    stored = np.asarray(nibabel.load(str(path)).dataobj)  # (20, 16, 5): slice axis 2
    assert volume.axis == 2 and labels.shape == (5, 20, 16) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.moveaxis(stored > 400.0, -1, 0))
    _, largest = predict_volume(Threshold(), path, mean=[400.0], std=[100.0], lcc=True)
    from scipy import ndimage

    assert ndimage.label(largest)[1] == 1 < ndimage.label(labels)[1]
    assert not largest[labels == 0].any()
    out = write_volume_prediction(tmp_path / "pred", volume, labels)
    assert out.name == "case_000.nii.gz"
    written = nibabel.load(str(out))
    np.testing.assert_array_equal(written.affine, nibabel.load(str(path)).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.moveaxis(labels, 0, -1))


def test_h5_input_gets_its_spacing(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as handle:
        handle["image"] = np.random.default_rng(0).normal(size=(3, 8, 10)).astype(np.float32)
        handle["image"].attrs["spacing"] = [6.0, 1.25, 1.25]
    volume, labels = predict_volume(Threshold(), path, mean=[0.0], std=[1.0], slice_axis=0)
    out = write_volume_prediction(tmp_path, volume, labels)
    assert out.name == "scan.nii.gz" and labels.shape == (3, 8, 10)
    np.testing.assert_array_equal(nibabel.load(str(out)).affine, np.diag([6.0, 1.25, 1.25, 1.0]))
    assert (np.asarray(nibabel.load(str(out)).dataobj) == (volume.array > 0)).all()
