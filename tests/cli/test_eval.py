"""``weakseg eval``: report and table on a checkpoint, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weakseg.cli import main
from weakseg.cli.eval import format_table
from weakseg.data import SYNTHETIC_CLASSES, write_synthetic_dataset
from weakseg.engine.checkpoint import save_checkpoint
from weakseg.engine.config import TrainConfig
from weakseg.models import build_model


def make_checkpoint(path: Path, data_root: Path | None = None) -> Path:
    """A checkpoint of an untrained U-Net in the format of ``weakseg train``."""
    torch.manual_seed(0)
    model = build_model("unet", len(SYNTHETIC_CLASSES))
    args = TrainConfig(
        dataset="folder" if data_root else "synthetic",
        data_root=str(data_root) if data_root else None,
        synthetic_train=2,
        synthetic_val=2,
        synthetic_size=32,
        crop_size=32,
    ).to_dict()
    state = {
        "model": model.state_dict(),
        "args": args,
        "model_config": {"name": "unet", "num_classes": 4, "in_channels": 3, "output_stride": None},
        "class_names": list(SYNTHETIC_CLASSES),
    }
    return save_checkpoint(state, path)


def test_eval_report(tmp_path, capsys) -> None:
    root = write_synthetic_dataset(tmp_path / "data", n_train=2, n_val=3, size=32)
    checkpoint = make_checkpoint(tmp_path / "c.pth", root)
    output = tmp_path / "out" / "report.json"
    assert (
        main(
            [
                "eval",
                str(checkpoint),
                "--scales",
                "1",
                "0.5",
                "--batch-size",
                "2",
                "-o",
                str(output),
            ]
        )
        == 0
    )
    report = json.loads(output.read_text())
    assert report["images"] == 3 and report["pixels"] == 3 * 32 * 32
    assert report["scales"] == [1.0, 0.5] and report["split"] == "val"
    assert "pixel accuracy" in capsys.readouterr().out
    # the synthetic data set stored in the checkpoint, evaluated on another split
    synthetic = make_checkpoint(tmp_path / "s.pth")
    assert main(["eval", str(synthetic), "--split", "val"]) == 0


def test_format_table_marks_absent_classes() -> None:
    report = {
        "iou": {"bg": 0.5, "a": None},
        "dice": {"bg": 2 / 3, "a": None},
        "miou": 0.5,
        "mean_dice": None,
        "pixel_accuracy": 0.75,
    }
    table = format_table(report)
    assert "n/a" in table and "50.00" in table and "75.00" in table


def test_eval_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing.pth"):
        main(["eval", str(tmp_path / "missing.pth")])
    save_checkpoint({"model": {}}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match=r"bare.pth has no 'model_config'"):
        main(["eval", str(tmp_path / "bare.pth")])
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    with pytest.raises(SystemExit, match=r"--batch-size must be >= 1, got 0"):
        main(["eval", str(checkpoint), "--batch-size", "0"])
    with pytest.raises(SystemExit, match=r"--crf-iterations must be >= 0, got -1"):
        main(["eval", str(checkpoint), "--crf", "--crf-iterations", "-1"])
    with pytest.raises(ValueError, match=r"scales must be a non-empty list of positive factors"):
        main(["eval", str(checkpoint), "--scales", "0"])
    other = write_synthetic_dataset(tmp_path / "other", n_train=1, n_val=1, size=32)
    (other / "classes.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(SystemExit, match=r"the dataset's classes \['a', 'b', 'c', 'd'\] differ"):
        main(["eval", str(checkpoint), "--dataset", "folder", "--data-root", str(other)])
