"""GrabCut proposals: synthetic images with scribbles, the dataset writer, error paths."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.data import FolderDataset
from weakseg.data.io import read_label, write_label
from weakseg.proposals import grabcut_proposal, write_grabcut_proposals

pytest.importorskip("cv2")  # weakseg.proposals itself imports OpenCV only when used

H, W = 48, 64


def _two_regions(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy blue background with an orange disc; scribbles inside the disc and around it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    inside = (yy - 24) ** 2 + (xx - 34) ** 2 < 14**2
    image = np.empty((3, H, W))
    image[:, ~inside] = np.array([40.0, 90.0, 200.0])[:, None]
    image[:, inside] = np.array([220.0, 120.0, 30.0])[:, None]
    image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255)
    scribbles = np.full((H, W), 255, dtype=np.int64)
    scribbles[22:26, 28:40] = 1
    scribbles[4, 4:60] = 0
    scribbles[44, 4:60] = 0
    return image, scribbles, inside.astype(np.uint8)


def test_two_regions_mostly_correct():
    image, scribbles, truth = _two_regions()
    mask = grabcut_proposal(image, scribbles, num_classes=2)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    # The colours are separated by ~9 noise stds: anything below 95% would be a real failure.
    assert (mask == truth).mean() > 0.95
    labeled = scribbles != 255
    assert np.array_equal(mask[labeled], scribbles[labeled])  # scribbles are kept


def test_tensor_and_gray_inputs_and_three_classes():
    image, scribbles, truth = _two_regions(seed=1)
    from_tensor = grabcut_proposal(torch.from_numpy(image).float(), torch.from_numpy(scribbles))
    assert (from_tensor == truth).mean() > 0.95
    gray = image.mean(axis=0)  # [H, W]: blue ~110, orange ~123 with noise: weak contrast
    assert grabcut_proposal(gray, scribbles).shape == (H, W)
    # a third region (green stripe on the right) with its own scribble
    rng = np.random.default_rng(2)
    stripe = np.zeros((H, W), dtype=bool)
    stripe[:, 56:] = True
    image[:, stripe] = np.clip(
        np.array([60.0, 200.0, 60.0])[:, None] + rng.normal(0, 20, (3, int(stripe.sum()))), 0, 255
    )
    scribbles[10:40, 60] = 2
    scribbles[4, 56:] = 2
    scribbles[44, 56:] = 2
    truth = np.where(stripe, 2, truth)
    mask = grabcut_proposal(image, scribbles, num_classes=3)
    assert set(np.unique(mask)) == {0, 1, 2}
    assert (mask == truth).mean() > 0.95


def test_degenerate_scribbles():
    image, _, _ = _two_regions()
    none = np.full((H, W), 255)
    assert (grabcut_proposal(image, none) == 255).all()
    single = none.copy()
    single[3, 3] = 4
    assert (grabcut_proposal(image, single) == 4).all()


def test_errors():
    image, scribbles, _ = _two_regions()
    with pytest.raises(ValueError, match=r"size mismatch: image is 64x48 \(WxH\) but scribbles"):
        grabcut_proposal(image, scribbles[:-1])
    with pytest.raises(ValueError, match=r"image must have shape \[C, H, W\] with C = 1"):
        grabcut_proposal(image[:2], scribbles)
    with pytest.raises(ValueError, match=r"image must hold intensities in the 0-255 range"):
        grabcut_proposal(image / 255 * 2 - 1, scribbles)
    with pytest.raises(ValueError, match=r"scribbles must have shape \[H, W\]"):
        grabcut_proposal(image, scribbles[None])
    with pytest.raises(TypeError, match=r"scribbles must hold integer class ids"):
        grabcut_proposal(image, scribbles.astype(np.float32))
    with pytest.raises(TypeError, match=r"image must be a numpy array or a torch\.Tensor"):
        grabcut_proposal(image.tolist(), scribbles)
    with pytest.raises(ValueError, match=r"class ids \[0, 1\] outside 0\.\.0 \(num_classes=1"):
        grabcut_proposal(image, scribbles, num_classes=1)
    with pytest.raises(ValueError, match=r"n_iter must be an int >= 1, got 0"):
        grabcut_proposal(image, scribbles, n_iter=0)


def test_missing_opencv_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    image, scribbles, _ = _two_regions()
    with pytest.raises(ImportError, match=r"pip install opencv-python-headless"):
        grabcut_proposal(image, scribbles)


def _folder_dataset(root, n: int = 2) -> None:
    for name in ("images", "scribbles", "splits"):
        (root / name).mkdir(parents=True)
    (root / "classes.txt").write_text("background\nobject\n")
    (root / "splits" / "train.txt").write_text("".join(f"s{i}\n" for i in range(n)))
    for i in range(n):
        image, scribbles, _ = _two_regions(seed=i)
        Image.fromarray(image.round().astype(np.uint8).transpose(1, 2, 0)).save(
            root / "images" / f"s{i}.png"
        )
        write_label(root / "scribbles" / f"s{i}.png", scribbles)


def test_write_proposals_for_a_folder_split(tmp_path):
    _folder_dataset(tmp_path / "data")
    dataset = FolderDataset(tmp_path / "data", "train")
    out = tmp_path / "proposals"
    paths = write_grabcut_proposals(dataset, out, progress=False)
    assert [p.name for p in paths] == ["s0.png", "s1.png"]
    for i, path in enumerate(paths):
        assert (read_label(path) == _two_regions(seed=i)[2]).mean() > 0.95
    # existing files are kept unless overwrite=True (resumable runs)
    write_label(paths[0], np.zeros((H, W), dtype=np.uint8))
    write_grabcut_proposals(dataset, out, progress=False)
    assert (read_label(paths[0]) == 0).all()
    write_grabcut_proposals(dataset, out, progress=False, overwrite=True)
    assert (read_label(paths[0]) == 1).any()


def test_write_proposals_errors(tmp_path):
    _folder_dataset(tmp_path / "data", n=1)
    tags = FolderDataset(tmp_path / "data", "train", supervision="unlabeled")
    with pytest.raises(ValueError, match=r"need scribbles: dataset has supervision='unlabeled'"):
        write_grabcut_proposals(tags, tmp_path / "out", progress=False)
    with pytest.raises(TypeError, match=r"dataset must be a weakseg SegmentationDataset"):
        write_grabcut_proposals([], tmp_path / "out", progress=False)


def test_init_decides_a_region_that_no_scribble_touches():
    # blue | green | red bands, scribbles only in blue (class 0) and red (class 1): the colour
    # models learn green from whichever class the first guess gives it
    rng = np.random.default_rng(0)
    image = np.empty((3, H, W))
    image[:, :, :21] = np.array([40.0, 60.0, 200.0])[:, None, None]
    image[:, :, 21:43] = np.array([60.0, 200.0, 60.0])[:, None, None]
    image[:, :, 43:] = np.array([210.0, 50.0, 40.0])[:, None, None]
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255)
    scribbles = np.full((H, W), 255)
    scribbles[10:38, 8], scribbles[10:38, 55] = 0, 1
    columns = np.broadcast_to(np.arange(W), (H, W))
    for green, init in [(0, (columns >= 43).astype(np.int64)), (1, (columns >= 21).astype(int))]:
        mask = grabcut_proposal(image, scribbles, num_classes=2, init=torch.from_numpy(init))
        assert (mask[:, :21] == 0).all() and (mask[:, 43:] == 1).all()
        assert (mask[:, 21:43] == green).all()
    with pytest.raises(ValueError, match=r"init must have the scribbles' shape \(48, 64\)"):
        grabcut_proposal(image, scribbles, init=columns[:10])


def test_write_proposals_for_the_synthetic_dataset(tmp_path):
    from weakseg.data import SyntheticDataset

    dataset = SyntheticDataset(2, 32, seed=1)
    paths = write_grabcut_proposals(dataset, tmp_path, progress=False)
    assert [p.name for p in paths] == ["synthetic_00000.png", "synthetic_00001.png"]
    _, mask, scribbles = dataset.generate(0)
    proposal = read_label(paths[0])
    labeled = scribbles != 255
    assert (proposal[labeled] == scribbles[labeled]).all()
    assert (proposal == mask).mean() > 0.6  # a rough full mask, no ignore left
    assert (proposal != 255).all()
