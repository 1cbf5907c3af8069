"""Tiny on-disk datasets built in tmp_path, and the path of the real ACDC scribble set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.data.io import write_label

# CI has the shared data at ../shared relative to the repository root; tests skip without it.
ACDC_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "acdc-scribble"


def square_mask(size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Background 0 with a class-1 square and a class-2 bar."""
    mask = np.zeros(size, dtype=np.uint8)
    mask[4:14, 4:14] = 1
    mask[16:22, 2:30] = 2
    return mask


def make_folder(
    root: Path, n: int = 3, size: tuple[int, int] = (24, 32), rgb: bool = False
) -> Path:
    """A folder dataset of ``n`` gray (or RGB) images with K=3 classes, scribbles and masks."""
    for sub in ("images", "scribbles", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        sample_id = f"case{i}"
        mask = square_mask(size)
        pixels = (mask * 80 + rng.integers(0, 20, size)).astype(np.uint8)
        image = Image.fromarray(np.stack([pixels] * 3, -1) if rgb else pixels)
        image.save(root / "images" / f"{sample_id}.png")
        scribbles = np.full(size, 255, dtype=np.uint8)
        scribbles[8, 6:12] = 1
        scribbles[19, 5:25] = 2
        scribbles[1, 2:30] = 0
        write_label(root / "scribbles" / f"{sample_id}.png", scribbles)
        write_label(root / "masks" / f"{sample_id}.png", mask)
        ids.append(sample_id)
    (root / "splits" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "splits" / "val.txt").write_text(ids[0] + "\n")
    (root / "classes.txt").write_text("background\nsquare\nbar\n")
    return root


def make_voc(root: Path, ids: tuple[str, ...] = ("2007_000001", "2007_000002")) -> Path:
    """A tiny VOCdevkit/VOC2012 tree with JPEG images, palette masks (one in Aug only) and
    ScribbleSup-style scribbles."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in (
        "JPEGImages",
        "SegmentationClass",
        "SegmentationClassAug",
        "ImageSets/Segmentation",
        "pascal_2012_scribble",
    ):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i, sample_id in enumerate(ids):
        mask = np.zeros((20, 30), dtype=np.uint8)
        mask[5:15, 5:15] = 15  # person
        mask[5:15, 4] = 255  # object boundary, as VOC marks it
        Image.fromarray(np.full((20, 30, 3), 100 + i, dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{sample_id}.jpg"
        )
        write_label(voc / "SegmentationClassAug" / f"{sample_id}.png", mask, palette=False)
        if i == 0:
            write_label(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        scribbles = np.full((20, 30), 255, dtype=np.uint8)
        scribbles[10, 7:13] = 15
        scribbles[1, 1:29] = 0
        write_label(voc / "pascal_2012_scribble" / f"{sample_id}.png", scribbles)
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train_aug.txt").write_text("\n".join(ids) + "\n")
    (sets / "train.txt").write_text(ids[0] + "\n")
    (sets / "val.txt").write_text(ids[-1] + "\n")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "folder")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc(tmp_path / "voc")


@pytest.fixture
def acdc_root() -> Path:
    if not (ACDC_ROOT / "splits" / "train.txt").is_file():
        pytest.skip(f"no ACDC scribble data at {ACDC_ROOT}")
    return ACDC_ROOT.resolve()


@pytest.fixture
def folder_factory():
    """``make_folder(root, n=3, size=(24, 32), rgb=False)``."""
    return make_folder
