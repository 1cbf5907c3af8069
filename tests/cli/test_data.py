"""``weakseg data check``: the printed report, the JSON report and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from weakseg.cli import main
from weakseg.data.io import write_label


def make_folder(root: Path) -> Path:
    """Three 24 x 32 gray images, K = 3, scribbles (54 px each) and masks."""
    for sub in ("images", "scribbles", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    mask = np.zeros((24, 32), np.uint8)
    mask[4:14, 4:14], mask[16:22, 2:30] = 1, 2
    scribbles = np.full((24, 32), 255, np.uint8)
    scribbles[8, 6:12], scribbles[19, 5:25], scribbles[1, 2:30] = 1, 2, 0
    for i in range(3):
        Image.fromarray(mask * 80).save(root / "images" / f"case{i}.png")
        write_label(root / "scribbles" / f"case{i}.png", scribbles)
        write_label(root / "masks" / f"case{i}.png", mask)
    (root / "splits" / "train.txt").write_text("case0\ncase1\ncase2\n")
    (root / "splits" / "val.txt").write_text("case0\n")
    (root / "classes.txt").write_text("background\nsquare\nbar\n")
    return root


def test_data_check_clean_and_with_problems(tmp_path: Path, capsys) -> None:
    folder = make_folder(tmp_path / "folder")
    assert main(["data", "check", str(folder), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "split train: 3 ids (2D images) in 3 volumes by id pattern" in out
    assert "labeled fraction (scribbles): 7.03% of the pixels" in out  # 54 / 768
    assert "usable for: scribble training, evaluation and full supervision" in out
    # the three images are the same picture, and val's case0 is train's: reported, exit 0
    group = "train/case0 = train/case1 = train/case2 = val/case0: 1 identical image"
    assert f"{group} (across splits: evaluation sees training images)" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report[1]["duplicates"] == [
        {"members": [["train", f"case{i}"] for i in range(3)] + [["val", "case0"]], "images": 1}
    ]
    assert [r["split"] for r in report] == ["train", "val"] and report[0]["shapes"] == {
        "1x24x32": 3
    }
    write_label(folder / "masks" / "case1.png", np.full((24, 32), 9, np.uint8))
    assert main(["data", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "problems (1):" in out and "masks/case1.png: mask file" in out


def test_data_check_missing_root(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(tmp_path / "none")]) == 2
    assert "error: dataset folder not found" in capsys.readouterr().err
