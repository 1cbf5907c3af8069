import argparse
import inspect

import numpy as np
from PIL import Image

from weakseg.cli import main
from weakseg.cli.segment import add_parser
from weakseg.interactive import segment_image


def test_segment_command_writes_mask(tmp_path, capsys):
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:, 12:] = 200
    scribbles = np.full((16, 24), 255, dtype=np.uint8)
    scribbles[4, 2], scribbles[10, 21] = 0, 1
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(scribbles).save(tmp_path / "scribbles.png")
    out = tmp_path / "mask.png"
    status = main(
        [
            "segment",
            str(tmp_path / "image.png"),
            "--scribbles",
            str(tmp_path / "scribbles.png"),
            "-o",
            str(out),
            "--loss",
            "dense_crf",
            "--sigma-xy",
            "10",
        ]
    )
    assert status == 0 and "wrote" in capsys.readouterr().out
    mask = np.asarray(Image.open(out))
    assert mask.shape == (16, 24) and mask.dtype == np.uint8
    assert (mask[:, :12] == 0).mean() > 0.9 and (mask[:, 12:] == 1).mean() > 0.9


def test_segment_command_defaults_are_segment_image_defaults():
    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["image.png", "--scribbles", "s.png", "-o", "m.png"])
    defaults = inspect.signature(segment_image).parameters
    for option, name in [
        ("loss", "loss"),
        ("weight", "weight"),
        ("gamma", "gamma"),
        ("sigma_rgb", "sigma_rgb"),
        ("sigma_xy", "sigma_xy"),
        ("steps", "n_steps"),
        ("lr", "lr"),
        ("init", "init"),
        ("scale_factor", "scale_factor"),
        ("backend", "backend"),
    ]:
        assert getattr(args, option) == defaults[name].default, option


def test_segment_command_grid_potts_and_nearest_init(tmp_path):
    image = np.zeros((12, 16), dtype=np.uint8)
    image[:, 8:] = 220
    scribbles = np.full((12, 16), 255, dtype=np.uint8)
    scribbles[3, 1], scribbles[8, 14] = 0, 1
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(scribbles).save(tmp_path / "scribbles.png")
    out = tmp_path / "mask.png"
    argv = ["segment", str(tmp_path / "image.png"), "--scribbles", str(tmp_path / "scribbles.png")]
    assert main([*argv, "-o", str(out), "--loss", "grid_potts", "--init", "nearest"]) == 0
    mask = np.asarray(Image.open(out))
    assert (mask[:, :8] == 0).mean() > 0.9 and (mask[:, 8:] == 1).mean() > 0.9


def test_segment_command_reports_mismatched_scribbles(tmp_path, capsys):
    Image.fromarray(np.zeros((12, 16), dtype=np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(np.full((10, 16), 255, dtype=np.uint8)).save(tmp_path / "scribbles.png")
    argv = ["segment", str(tmp_path / "image.png"), "--scribbles", str(tmp_path / "scribbles.png")]
    assert main([*argv, "-o", str(tmp_path / "mask.png")]) == 1
    assert "size mismatch" in capsys.readouterr().err
    assert not (tmp_path / "mask.png").exists()
