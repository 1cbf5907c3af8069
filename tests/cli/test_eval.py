"""``weakseg eval``: report and table on a checkpoint, and its error paths."""

from __future__ import annotations

import json
import re
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
    # ids synthetic_0000N do not match the default volume pattern: each image is a volume
    assert report["volumes"] == 3 and set(report["per_volume"]) == {
        "synthetic_00002",
        "synthetic_00003",
        "synthetic_00004",
    }
    assert {"dice_3d", "mean_dice_3d", "hd95_3d", "mean_hd95_3d"} <= set(report)
    assert report["hd95_unit"] == "voxels" and report["lcc"] is False
    # one volume of all three by a pattern; largest component per class
    grouped = tmp_path / "grouped.json"
    args = ["eval", str(checkpoint), "--volume-pattern", r"^(synthetic)_\d+$", "--lcc"]
    assert main([*args, "-o", str(grouped)]) == 0
    report = json.loads(grouped.read_text())
    assert report["volumes"] == 1 and report["per_volume"]["synthetic"]["slices"] == 3
    assert report["lcc"] is True and report["volume_pattern"] == r"^(synthetic)_\d+$"
    table = capsys.readouterr().out
    assert "per volume (1)" in table and "HD95 voxels" in table and "mean (foreground)" in table
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
    assert "per volume" not in table
    report.update(
        volumes=2,
        dice_3d={"bg": 0.9, "a": 0.8},
        hd95_3d={"bg": None, "a": 3.25},
        mean_dice_3d=0.8,
        mean_hd95_3d=3.25,
        hd95_unit="mm",
    )
    lines = format_table(report).splitlines()
    assert lines[-4].split() == ["per", "volume", "(2)", "Dice", "%", "HD95", "mm"]
    assert lines[-2].split() == ["a", "80.00", "3.25"] and lines[-3].split() == [
        "bg",
        "90.00",
        "n/a",
    ]
    assert lines[-1].split() == ["mean", "(foreground)", "80.00", "3.25"]


def test_eval_errors(tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path / "missing.pth")]) == 2
    assert re.search(r"error: checkpoint not found: .*missing.pth", capsys.readouterr().err)
    save_checkpoint({"model": {}}, tmp_path / "bare.pth")
    assert main(["eval", str(tmp_path / "bare.pth")]) == 2
    assert "bare.pth has no 'model_config'" in capsys.readouterr().err
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    for args, message in [
        (["--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
        (["--crf", "--crf-iterations", "-1"], "error: --crf-iterations must be >= 0, got -1"),
        (["--volume-pattern", "(x"], "error: --volume-pattern: volume_pattern '(x' is not a"),
        (["--device", "nonsense"], "error: --device 'nonsense' is not a device name"),
    ]:
        assert main(["eval", str(checkpoint), *args]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"scales must be a non-empty list of positive factors"):
        main(["eval", str(checkpoint), "--scales", "0"])
    other = write_synthetic_dataset(tmp_path / "other", n_train=1, n_val=1, size=32)
    (other / "classes.txt").write_text("a\nb\nc\nd\n")
    assert main(["eval", str(checkpoint), "--dataset", "folder", "--data-root", str(other)]) == 2
    assert "error: the dataset's classes ['a', 'b', 'c', 'd'] differ" in capsys.readouterr().err
    (other / "masks" / "synthetic_00001.png").unlink()  # the val id: evaluation needs its mask
    assert main(["eval", str(checkpoint), "--dataset", "folder", "--data-root", str(other)]) == 2
    assert "error: missing mask file for id 'synthetic_00001'" in capsys.readouterr().err
