"""weakseg.engine.metrics against hand-computed confusion matrices and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakseg.engine.metrics import (
    ConfusionMatrix,
    boundary_band,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    summarize,
)


def test_confusion_matrix_counts_and_ignores() -> None:
    pred = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    target = torch.tensor([[0, 1, 0, 2], [255, 2, 1, 255]])
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 2]])  # [true, predicted]
    assert torch.equal(confusion_matrix(pred, target, 3), expected)


def test_metrics_closed_forms() -> None:
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2 absent everywhere
    # IoU_k = TP / (row + col - TP); Dice_k = 2 TP / (row + col)
    iou = iou_per_class(cm)
    assert iou[0].item() == pytest.approx(5 / (6 + 7 - 5))
    assert iou[1].item() == pytest.approx(3 / (5 + 4 - 3))
    assert math.isnan(iou[2].item())
    dice = dice_per_class(cm)
    assert dice[0].item() == pytest.approx(10 / 13)
    assert dice[1].item() == pytest.approx(6 / 9)
    assert mean_iou(cm) == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert mean_dice(cm) == pytest.approx(6 / 9)  # foreground only, class 2 absent
    assert pixel_accuracy(cm) == pytest.approx(8 / 11)
    # Dice = 2 IoU / (1 + IoU) class by class
    torch.testing.assert_close(dice[:2], 2 * iou[:2] / (1 + iou[:2]))


def test_summary_is_json_friendly() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    cm.update(torch.tensor([[1, 1]]), torch.tensor([[0, 255]]))
    report = cm.summary(["bg", "a", "b"])
    assert report["pixels"] == 3
    assert report["iou"] == {"bg": 0.5, "a": 0.5, "b": None}
    assert report["pixel_accuracy"] == pytest.approx(2 / 3)
    assert report["mean_dice"] == pytest.approx(2 / 3)
    empty = summarize(torch.zeros(2, 2, dtype=torch.int64))
    assert empty["miou"] is None and empty["pixel_accuracy"] is None


def test_metric_errors() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        confusion_matrix(torch.zeros(2), torch.zeros(3), 2)
    with pytest.raises(ValueError, match=r"class ids must be in 0..1 .* got \[5\]"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="got 1 class names for a 2-class matrix"):
        summarize(torch.zeros(2, 2, dtype=torch.int64), ["only"])


def test_boundary_band() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[:, 5:] = 1  # one vertical boundary between columns 4 and 5
    edges = boundary_band(mask, 0)
    assert edges[:, 4:6].all() and edges.sum() == 18
    band = boundary_band(mask, 2)
    assert band[:, 2:8].all() and band.sum() == 9 * 6
    assert not boundary_band(np.zeros((5, 5), dtype=np.uint8), 2).any()
