"""``weakseg viz gradients`` / ``weakseg viz curves`` on tiny generated inputs, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.cli import main
from weakseg.viz.curves import curves_size
from weakseg.viz.gradients import gradient_figure_size

from .test_eval import make_checkpoint


def _image_and_scribbles(folder: Path, mode: str = "RGB", size: tuple[int, int] = (16, 12)):
    """A two-region image (left dark, right bright) and scribbles of classes 0 and 2."""
    width, height = size
    pixels = np.full((height, width), 40, dtype=np.uint8)
    pixels[:, width // 2 :] = 210
    image = Image.fromarray(pixels)
    image = image.convert(mode)
    scribbles = np.full((height, width), 255, dtype=np.uint8)
    scribbles[2:8, 2] = 0
    scribbles[3:9, width - 3] = 2
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "image.png")
    Image.fromarray(scribbles).save(folder / "scribbles.png")
    return folder / "image.png", folder / "scribbles.png"


def test_gradients_from_scribbles(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for mode in ("RGB", "L"):
        image, scribbles = _image_and_scribbles(tmp_path / mode, mode)
        output = tmp_path / "figures" / f"{mode}.png"
        args = ["viz", "gradients", str(image), "--scribbles", str(scribbles), "-o", str(output)]
        assert main([*args, "--backend", "exact", "--device", "cpu", "--panel-size", "64"]) == 0
        # K = 3 (the largest id + 1); rows: the scribbled classes (unlabeled pixels are uniform)
        assert "classes 0, 2" in capsys.readouterr().out
        with Image.open(output) as figure:  # 3 title lines, 2 class rows, 3 regularizers
            assert figure.size == gradient_figure_size(12, 16, 2, 3, 64, title_lines=3)
    only = tmp_path / "only.png"
    assert (
        main(
            [
                "viz",
                "gradients",
                str(image),
                "--scribbles",
                str(scribbles),
                "--losses",
                "dense_crf",
                "--classes",
                "2",
                "--raw",
                "--device",
                "cpu",
                "--panel-size",
                "64",
                "-o",
                str(only),
            ]
        )
        == 0
    )
    assert Image.open(only).size == gradient_figure_size(12, 16, 1, 1, 64, title_lines=3)


def test_gradients_from_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")  # untrained U-Net, 4 synthetic classes
    image, scribbles = _image_and_scribbles(tmp_path, "L", (32, 32))  # gray -> the net's RGB
    output = tmp_path / "fig.png"
    command = ["viz", "gradients", str(image), "--scribbles", str(scribbles), "-o", str(output)]
    command += ["--checkpoint", str(checkpoint), "--device", "cpu", "--panel-size", "48"]
    assert main([*command, "--classes", "0", "1", "2", "3"]) == 0
    assert "classes background, stripes, dots, speckle" in capsys.readouterr().out
    assert Image.open(output).size == gradient_figure_size(32, 32, 4, 3, 48, title_lines=3)


def test_gradients_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, scribbles = _image_and_scribbles(tmp_path)
    out = str(tmp_path / "o.png")

    def error(*args: str) -> str:
        assert main(["viz", "gradients", *args, "-o", out, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "missing image file: " in error(
        str(tmp_path / "nope.png"), "--scribbles", str(scribbles)
    )
    assert "missing scribbles file: " in error(str(image), "--scribbles", str(tmp_path / "x.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    message = error(str(tmp_path / "broken.png"), "--scribbles", str(scribbles))
    assert "unreadable or truncated image file" in message and "broken.png" in message
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "small.png")
    message = error(str(image), "--scribbles", str(tmp_path / "small.png"))
    assert "size mismatch: image" in message and "16x12" in message and "7x5" in message
    Image.fromarray(np.full((12, 16), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    message = error(str(image), "--scribbles", str(tmp_path / "blank.png"))
    assert "blank.png has no labeled pixel" in message
    message = error(str(image), "--scribbles", str(scribbles), "--num-classes", "2")
    assert "holds label values {2} >= num_classes=2" in message
    assert "--classes: 5 is not a class id (0..2)" in error(
        str(image), "--scribbles", str(scribbles), "--classes", "5"
    )
    assert "checkpoint not found: " in error(
        str(image), "--scribbles", str(scribbles), "--checkpoint", str(tmp_path / "no.pth")
    )
    assert not Path(out).exists()


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_curves_losses_and_metrics_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_jsonl(
        tmp_path / "gd" / "losses.jsonl",
        [
            {"iteration": i, "epoch": 0, "lr": 0.1, "pce": 1 / i, "dense_crf": 1 / i}
            for i in range(1, 30)
        ],
    )
    _write_jsonl(
        tmp_path / "adm" / "metrics.jsonl",
        [
            {"epoch": e, "iteration": 10 * (e + 1), "lr": 0.1, "train": {"pce": 0.5}}
            for e in range(3)
        ],
    )
    output = tmp_path / "out" / "curves.png"
    runs = [str(tmp_path / "gd"), str(tmp_path / "adm")]
    assert main(["viz", "curves", *runs, "--terms", "pce", "dense_crf", "-o", str(output)]) == 0
    assert "gd: losses.jsonl, adm: metrics.jsonl" in capsys.readouterr().out
    assert Image.open(output).size == curves_size(2, 2)
    assert main(["viz", "curves", runs[0], "--smooth", "5", "-o", str(output)]) == 0
    assert Image.open(output).size == curves_size(2, 1)

    assert main(["viz", "curves", runs[1], "--terms", "dense_crf", "-o", str(output)]) == 2
    assert "no run logs the term 'dense_crf'; the runs log: pce" in capsys.readouterr().err
    assert main(["viz", "curves", str(tmp_path / "none"), "-o", str(output)]) == 2
    assert "run folder not found: " in capsys.readouterr().err


def test_viz_without_subcommand_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["viz"]) == 2
    out = capsys.readouterr().out
    assert "gradients" in out and "curves" in out
