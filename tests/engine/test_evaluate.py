"""weakseg.engine.evaluate: per-slice and per-volume metrics of a network on a split of volumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from weakseg.data import FolderDataset, eval_transforms
from weakseg.engine.evaluate import Evaluation, evaluate
from weakseg.engine.loaders import build_val_loader


class Constant(nn.Module):
    """Logits that predict class ``k`` everywhere."""

    def __init__(self, k: int, num_classes: int) -> None:
        super().__init__()
        self.k, self.num_classes = k, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        logits[:, self.k] = 1.0
        return logits


def test_volumes_scored_in_mm(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = write_synthetic_volumes(tmp_path / "v", n_train=1, n_val=2, shape=(20, 16, 5))
    val = FolderDataset(root, "val", "unlabeled", eval_transforms(pad_to=24), load_masks=True)
    loader = build_val_loader(val, batch_size=3, num_workers=0)  # batches cross volumes
    result = evaluate(Constant(0, 4), loader, 4, torch.device("cpu"))
    assert isinstance(result, Evaluation) and result.matrix.sum() == 2 * 5 * 20 * 16
    summary = result.summary(["bg", "rv", "myo", "lv"])
    assert summary["volumes"] == 2 and summary["hd95_unit"] == "mm"
    assert [v["slices"] for v in summary["per_volume"].values()] == [5, 5]
    assert summary["mean_dice_3d"] == 0.0 and summary["dice_3d"]["bg"] > 0.5
    diagonal = math.sqrt((20 * 1.5) ** 2 + (16 * 1.5) ** 2 + (5 * 8.0) ** 2)
    assert summary["mean_hd95_3d"] == pytest.approx(diagonal)  # every structure missed
    assert summary["hd95_missed"] == {"bg": 0, "rv": 2, "myo": 2, "lv": 2}
    assert summary["hd95_3d"]["bg"] is None  # not computed for the background
    assert summary["miou"] is not None  # per-slice metrics stay
    plain = evaluate(Constant(0, 4), loader, 4, torch.device("cpu"), volume_metrics=False)
    assert "mean_dice_3d" not in plain.summary() and plain.summary()["pixels"] == 2 * 5 * 320
