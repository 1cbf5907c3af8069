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


def _one_error_line(capsys) -> str:
    """The stderr of a failed command: exactly one ``error:`` line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _image(path, size=(20, 30), value=120) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_predict_errors(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing.png"), "-o", "o"]) == 2
    assert "input not found: " in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(checkpoint), str(tmp_path / "empty"), "-o", "o"]) == 2
    assert "no image (.png" in _one_error_line(capsys)
    (tmp_path / "broken.png").write_bytes(b"garbage")
    out = str(tmp_path / "o")
    assert main(["predict", str(checkpoint), str(tmp_path / "broken.png"), "-o", out]) == 2
    line = _one_error_line(capsys)
    assert "unreadable or truncated image file" in line and "broken.png" in line
    assert line.endswith("; pass --skip-bad to skip such files")
    _image(tmp_path / "ok.png")
    for scales in (["0"], ["nan"], ["-1"]):
        assert (
            main(
                [
                    "predict",
                    str(checkpoint),
                    str(tmp_path / "ok.png"),
                    "-o",
                    out,
                    "--scales",
                    *scales,
                ]
            )
            == 2
        )
        assert "--scales must be finite positive factors" in _one_error_line(capsys)
    assert main(["predict", str(tmp_path / "none.pth"), str(tmp_path / "ok.png"), "-o", out]) == 2
    assert "checkpoint not found: " in _one_error_line(capsys)


def test_predict_refuses_a_crafted_checkpoint_in_one_line(tmp_path, capsys) -> None:
    class Code:
        def __reduce__(self):
            return (print, ("must not run",))

    torch.save({"model": Code()}, tmp_path / "crafted.pth")
    _image(tmp_path / "ok.png")
    argv = ["predict", str(tmp_path / "crafted.pth"), str(tmp_path / "ok.png"), "-o", "o"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "refused checkpoint" in line and "weights_only" not in line


def test_predict_never_writes_over_its_inputs(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    folder = tmp_path / "images"
    _image(folder / "x.png")
    before = (folder / "x.png").read_bytes()
    assert main(["predict", str(checkpoint), str(folder), "-o", str(folder)]) == 2
    line = _one_error_line(capsys)
    assert f"the output folder {folder} holds the input {folder / 'x.png'}: predictions" in line
    assert line.endswith("; choose an output folder (-o) other than the inputs' folder")
    assert (folder / "x.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["x.png"]  # nothing written
    _image(folder / "y.jpg")  # y.png would not replace an input, but would go among the images
    assert main(["predict", str(checkpoint), str(folder / "y.jpg"), "-o", str(folder)]) == 2
    assert "holds the input" in _one_error_line(capsys)
    out = tmp_path / "out"  # a link in the output folder to an input elsewhere
    out.mkdir()
    (out / "x.png").symlink_to(folder / "x.png")
    assert main(["predict", str(checkpoint), str(folder / "x.png"), "-o", str(out)]) == 2
    assert f"replacing the input {folder / 'x.png'}" in _one_error_line(capsys)
    assert (folder / "x.png").read_bytes() == before


def test_predict_overlay_name_of_one_input_is_another_input(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    folder = tmp_path / "images"
    _image(folder / "x.jpg")  # its overlay would be x_overlay.png ...
    _image(folder / "x_overlay.png")  # ... the mask of this input too
    assert main(["predict", str(checkpoint), str(folder), "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert f"the inputs {folder / 'x.jpg'} and {folder / 'x_overlay.png'} would both be" in line


def test_predict_output_names_never_collide(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    folder = tmp_path / "images"
    _image(folder / "a.png", value=10)
    _image(folder / "a.jpg", value=200)
    _image(folder / "b.png")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(folder), "-o", str(out), "--no-overlay"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]
    _image(tmp_path / "other" / "b.png")  # same name in another folder
    argv = ["predict", str(checkpoint), str(folder / "b.png"), str(tmp_path / "other"), "-o", "o2"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"the inputs {folder / 'b.png'} and {tmp_path / 'other' / 'b.png'} would both" in line
    # a file given twice (alone and in its folder) is predicted once
    argv = [
        "predict",
        str(checkpoint),
        str(folder / "b.png"),
        str(folder),
        "-o",
        str(tmp_path / "o3"),
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "o3").iterdir())[0] == "a_jpg.png"


def test_predict_skip_bad(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    folder = tmp_path / "images"
    _image(folder / "good.png")
    (folder / "bad.png").write_bytes(b"not an image")
    _image(folder / "tiny.png", size=(1, 1))
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint), str(folder), "-o", str(out), "--scales", "0.5", "1"]
    assert main(argv) == 2  # without --skip-bad: the first bad file stops it, named
    assert "bad.png" in _one_error_line(capsys)
    assert main([*argv, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "good_overlay.png"]
    assert "skipped: unreadable or truncated image file" in captured.err
    assert "tiny.png is 1x1 px: at scale 0.5 it would have no pixel" in captured.err
    assert f"predicted 1 of 3 images into {out}; skipped 2: " in captured.err
    (folder / "good.png").unlink()
    assert main([*argv, "--skip-bad"]) == 2
    assert (
        "error: no image could be predicted: all 2 inputs were skipped" in capsys.readouterr().err
    )


def test_predict_tiny_image_at_scale_one_works(tmp_path) -> None:
    checkpoint = make_checkpoint(tmp_path / "c.pth")
    _image(tmp_path / "tiny.png", size=(1, 1))
    assert (
        main(["predict", str(checkpoint), str(tmp_path / "tiny.png"), "-o", str(tmp_path / "o")])
        == 0
    )
    assert Image.open(tmp_path / "o" / "tiny.png").size == (1, 1)


def test_predict_unwritable_output_is_refused_before_the_model_loads(tmp_path, capsys) -> None:
    _image(tmp_path / "ok.png")
    (tmp_path / "file").write_text("x")
    argv = ["predict", str(tmp_path / "none.pth"), str(tmp_path / "ok.png"), "-o"]
    assert main([*argv, str(tmp_path / "file" / "o")]) == 2
    assert "cannot write predictions to " in _one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_cuda_without_cuda_is_one_line_before_any_work(tmp_path, capsys) -> None:
    argv = ["predict", str(tmp_path / "none.pth"), str(tmp_path / "none.png"), "-o", "o"]
    assert main([*argv, "--device", "cuda"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --device cuda asked for, but CUDA is not available")
