"""``weakseg predict``: masks and overlays for files and folders, and its error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.cli import main
from weakseg.engine.predict import colorize, overlay, palette

from .test_eval import make_checkpoint


def test_predict_files_and_folders(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 120, dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.full((17, 9), 60, dtype=np.uint8)).save(tmp_path / "gray.jpg")
    output = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(folder),
                str(tmp_path / "gray.jpg"),
                "-o",
                str(output),
                "--flip",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in output.iterdir()) == [
        "gray.png",
        "gray_overlay.png",
        "rgb.png",
        "rgb_overlay.png",
    ]
    assert Image.open(output / "gray.png").size == (9, 17)  # gray input replicated to RGB
    assert Image.open(output / "rgb_overlay.png").size == (30, 20)
    assert "rgb.png ->" in capsys.readouterr().out
    assert (
        main(["predict", str(checkpoint), str(folder), "-o", str(tmp_path / "m"), "--no-overlay"])
        == 0
    )
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["rgb.png"]


def test_overlay_and_colours() -> None:
    assert palette()[1].tolist() == [128, 0, 0] and palette()[0].tolist() == [0, 0, 0]
    image = np.full((1, 2, 2), 100.0, dtype=np.float32)
    label = np.array([[0, 1], [0, 0]], dtype=np.uint8)
    blended = overlay(image, label, alpha=0.5)
    assert blended[0, 0].tolist() == [100, 100, 100] and blended[0, 1].tolist() == [114, 50, 50]
    assert colorize(torch.tensor([[1]])).flatten().tolist() == [128, 0, 0]


def test_predict_errors(tmp_path) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    with pytest.raises(FileNotFoundError, match=r"input not found: .*nothing.png"):
        main(["predict", str(checkpoint), str(tmp_path / "nothing.png"), "-o", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image .* in folder .*empty"):
        main(["predict", str(checkpoint), str(tmp_path / "empty"), "-o", str(tmp_path)])
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"unreadable or truncated image file .*broken.png"):
        main(["predict", str(checkpoint), str(tmp_path / "broken.png"), "-o", str(tmp_path / "o")])
