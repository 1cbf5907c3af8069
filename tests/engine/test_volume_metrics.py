"""Per-volume Dice (by hand) and HD95 (against medpy, an independent implementation; skipped
without it), the empty cases, largest-component post-processing and the accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weakseg.engine.volume_metrics import (
    VolumeAccumulator,
    dice_per_class_3d,
    hd95,
    largest_component,
    summarize_volumes,
)
from weakseg.errors import DataError


def _blobs(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping irregular binary masks (thresholded smooth noise)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.05
    b = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.05
    return a | ndimage.binary_dilation(b & a), ndimage.binary_erosion(a, iterations=1) | (b & a)


def test_dice_by_hand() -> None:
    pred = np.array([[[0, 1, 1], [2, 2, 0]], [[1, 1, 0], [0, 0, 0]]])
    target = np.array([[[0, 1, 0], [2, 255, 0]], [[1, 0, 0], [0, 0, 3]]])
    dice = dice_per_class_3d(pred, target, 5)
    # class 1: TP 2, |P| 4, |G| 2 -> 4/6; class 2: TP 1 (one pred on an ignored voxel), |P| 1,
    # |G| 1 -> 1; class 3: |P| 0, |G| 1 -> 0; class 0: TP 5, |P| 6, |G| 7 -> 10/13; class 4: NaN
    np.testing.assert_allclose(dice[:4], [10 / 13, 4 / 6, 1.0, 0.0])
    assert math.isnan(dice[4])


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((24, 30), None),
        ((24, 30), (0.7, 1.9)),
        ((6, 20, 18), (10.0, 1.5, 1.5)),
        ((12, 12, 10), None),
    ],
)
def test_hd95_matches_medpy(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> None:
    binary = pytest.importorskip("medpy.metric.binary")
    for seed in range(4):
        pred, target = _blobs(seed, shape)
        assert pred.any() and target.any()
        expected = binary.hd95(pred, target, voxelspacing=spacing)
        assert hd95(pred, target, spacing) == pytest.approx(expected, rel=1e-12)


def test_hd95_by_hand_and_empty_cases() -> None:
    a = np.zeros((1, 9, 9), bool)
    a[0, 2:5, 2:5] = True
    # shift by 3 columns of 2 mm: the far surfaces are 6 mm apart (every voxel is on the
    # surface of a one-slice volume)
    assert hd95(a, np.roll(a, 3, axis=2), (5.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(a, a) == 0.0
    empty = np.zeros_like(a)
    assert math.isnan(hd95(empty, empty))
    diagonal = math.sqrt(5.0**2 + 9.0**2 + 18.0**2)  # the volume: 1 x 9 x 9 voxels of 5 x 1 x 2
    assert hd95(a, empty, (5.0, 1.0, 2.0)) == pytest.approx(diagonal)
    assert hd95(empty, a, (5.0, 1.0, 2.0)) == pytest.approx(diagonal)
    with pytest.raises(ValueError, match=r"spacing \(1\.0, 1\.0\) does not fit a 3D mask"):
        hd95(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="pred and target shapes differ"):
        hd95(a, a[0])


def test_largest_component() -> None:
    labels = np.zeros((2, 6, 6), np.int64)
    labels[0, 0:2, 0:2] = 1  # 4 voxels
    labels[:, 3:6, 3:6] = 1  # 18 voxels: kept
    labels[1, 0, 5] = 2  # a single class-2 component: kept
    out = largest_component(labels, 3)
    assert (out[0, 0:2, 0:2] == 0).all() and (out[:, 3:6, 3:6] == 1).all() and out[1, 0, 5] == 2
    assert (labels[0, 0:2, 0:2] == 1).all()  # input untouched


def test_accumulator_groups_orders_and_summarizes() -> None:
    target = np.zeros((3, 8, 8), np.uint8)
    target[:, 2:6, 2:6] = 1
    pred = target.copy()
    pred[2, 2:6, 2:6] = 0  # the last slice misses the structure
    acc = VolumeAccumulator(2)
    for position in (2, 0, 1):  # any order inside a volume
        acc.add("v1", position, pred[position], target[position], (4.0, 1.0, 1.0))
    acc.add("v2", None, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    scores = acc.finish()
    assert list(scores) == ["v1", "v2"] and scores["v1"].slices == 3
    assert scores["v1"].dice[1] == pytest.approx(2 * 32 / (32 + 48))
    # the missing slice's target surface is 4 mm (one slice) from the predicted surface
    expected = hd95(pred == 1, target == 1, (4.0, 1.0, 1.0))
    assert scores["v1"].hd95[1] == pytest.approx(expected) and expected > 0
    assert math.isnan(scores["v2"].dice[1]) and math.isnan(scores["v2"].hd95[1])
    assert math.isnan(scores["v1"].hd95[0])  # background: no HD95
    every = VolumeAccumulator(2, background=())
    every.add("v1", 0, pred[0], target[0])
    assert every.finish()["v1"].hd95[0] == 0.0  # asked for: the background's too
    summary = summarize_volumes(scores, ["bg", "fg"])
    assert summary["volumes"] == 2 and summary["hd95_unit"] == "voxels"  # v2 has no spacing
    assert summary["mean_dice_3d"] == pytest.approx(scores["v1"].dice[1])  # v2: NaN, left out
    assert summary["per_volume"]["v2"]["dice"]["fg"] is None
    assert summary["hd95_missed"] == {"bg": 0, "fg": 0}
    assert acc.confusion.matrix[1, 1] == 32 and acc.confusion.matrix[1, 0] == 16


def test_accumulator_missed_structure_and_revisited_volume() -> None:
    target = np.zeros((4, 4), np.uint8)
    target[1:3, 1:3] = 1
    acc = VolumeAccumulator(2)
    acc.add("a", 0, np.zeros((4, 4), np.uint8), target, (2.0, 1.0, 1.0))
    acc.add("b", 0, target, target, (2.0, 1.0, 1.0))
    with pytest.raises(DataError, match=r"the slices of volume 'a' are not consecutive"):
        acc.add("a", 1, target, target)
    summary = summarize_volumes(acc.finish(), ["bg", "fg"])
    assert summary["hd95_missed"]["fg"] == 1 and summary["hd95_unit"] == "mm"
    diagonal = math.sqrt(2.0**2 + 4**2 + 4**2)
    assert summary["per_volume"]["a"]["hd95"]["fg"] == pytest.approx(diagonal)
    assert summary["hd95_3d"]["fg"] == pytest.approx(diagonal / 2)  # mean of it and 0


def test_accumulator_lcc_and_ignore() -> None:
    target = np.zeros((6, 6), np.uint8)
    target[0:3, 0:3] = 1
    target[5, :] = 255  # ignored row
    pred = target.copy()
    pred[5, 5] = 1  # on an ignored pixel: not counted
    pred[4, 5] = 1  # a stray component: removed by lcc
    plain, lcc = VolumeAccumulator(2), VolumeAccumulator(2, lcc=True)
    for acc in (plain, lcc):
        acc.add("v", 0, pred, target)
    assert plain.finish()["v"].dice[1] == pytest.approx(18 / 19)
    assert lcc.finish()["v"].dice[1] == 1.0 and lcc.confusion.matrix[0, 1] == 0
