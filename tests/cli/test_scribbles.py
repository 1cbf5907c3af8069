import json
from pathlib import Path

import numpy as np
import pytest

from weakseg.cli import main
from weakseg.data import write_synthetic_dataset
from weakseg.data.io import read_label, write_label

XML = (
    "<annotation><size><width>6</width><height>5</height></size>"
    "<polygon><tag>dog</tag><point><X>1</X><Y>2</Y></point><point><X>4</X><Y>2</Y></point>"
    "</polygon></annotation>"
)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "syn", n_train=3, n_val=1, size=48, seed=0)


def test_help_lists_scribbles(capsys: pytest.CaptureFixture) -> None:
    assert main(["scribbles"]) == 2
    assert "convert-xml" in capsys.readouterr().out


def test_convert_xml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(XML)
    assert main(["scribbles", "convert-xml", str(tmp_path / "xml"), str(tmp_path / "out")]) == 0
    assert "converted 1 files" in capsys.readouterr().out
    label = read_label(tmp_path / "out" / "a.png")
    assert (label == 12).sum() == 18 and (label == 255).sum() == 12
    (tmp_path / "xml" / "b.xml").write_text("<annotation>")
    assert main(["scribbles", "convert-xml", str(tmp_path / "xml"), str(tmp_path / "o2")]) == 2
    assert "error: scribble XML" in capsys.readouterr().err
    args = ["scribbles", "convert-xml", str(tmp_path / "xml"), str(tmp_path / "o3"), "--skip-bad"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "1 bad files skipped" in captured.out and "b.xml" in captured.err


def test_simulate_shorten_stats(synthetic: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    assert main(["scribbles", "simulate", str(synthetic / "masks"), str(out), "--seed", "1"]) == 0
    assert "wrote 4 scribble files" in capsys.readouterr().out
    sim = read_label(out / "synthetic_00000.png")
    mask = read_label(synthetic / "masks" / "synthetic_00000.png")
    assert ((sim == mask) | (sim == 255)).all() and (sim != 255).any()
    short = tmp_path / "short"
    args = ["scribbles", "shorten", str(out), str(short), "--ratio", "0",
            "--mask-dir", str(synthetic / "masks")]  # fmt: skip
    assert main(args) == 0
    assert (read_label(short / "synthetic_00000.png") != 255).sum() < (sim != 255).sum()
    assert main(["scribbles", "stats", str(synthetic), "--split", "train"]) == 0
    assert "labeled fraction" in capsys.readouterr().out
    assert main(["scribbles", "stats", str(synthetic), "--split", "train", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and set(summary["per_class"]) == {
        "background", "stripes", "dots", "speckle"
    }  # fmt: skip


def test_errors(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    masks = str(synthetic / "masks")
    assert main(["scribbles", "shorten", masks, str(tmp_path / "o"), "--ratio", "2"]) == 2
    assert r"--ratio must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert main(["scribbles", "simulate", str(tmp_path / "none"), str(tmp_path / "o")]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert main(["scribbles", "stats", str(synthetic), "--split", "test"]) == 2
    assert "split file not found" in capsys.readouterr().err
    write_label(synthetic / "masks" / "synthetic_00001.png", np.full((48, 48), 9, np.uint8))
    assert main(["scribbles", "stats", str(synthetic), "--split", "train"]) == 2
    assert "holds label values {9} >= num_classes=4" in capsys.readouterr().err
    assert main(["scribbles", "stats", str(synthetic), "--split", "train", "--skip-bad"]) == 0
    assert "1 bad files skipped" in capsys.readouterr().out
    (synthetic / "masks" / "bad.png").write_bytes(b"junk")
    assert main(["scribbles", "simulate", masks, str(tmp_path / "s")]) == 2
    assert "unreadable or truncated mask file" in capsys.readouterr().err
    args = ["scribbles", "shorten", masks, str(tmp_path / "o"), "--ratio", "0.5", "--skip-bad"]
    assert main(args) == 0
    assert "1 bad files skipped" in capsys.readouterr().out


def test_commands_never_write_over_their_inputs(synthetic: Path, tmp_path, capsys) -> None:
    masks = synthetic / "masks"
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    for argv in (
        ["simulate", str(masks), str(masks)],
        ["shorten", str(masks), str(masks), "--ratio", "0.5"],
        [
            "shorten",
            str(synthetic / "scribbles"),
            str(masks),
            "--mask-dir",
            str(masks),
            "--ratio",
            "0.5",
        ],
        ["simulate", str(masks), str(masks / ".." / "masks")],
    ):
        assert main(["scribbles", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: OUT_DIR ") and "is the input folder" in err, err
        assert err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before


def test_inputs_that_would_write_one_output_are_refused(synthetic: Path, tmp_path, capsys) -> None:
    masks = synthetic / "masks"
    first = sorted(masks.iterdir())[0]
    twin = first.with_suffix(".bmp")
    twin.write_bytes(first.read_bytes())  # same stem, another extension
    assert main(["scribbles", "simulate", str(masks), str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"{first} and {twin} would both be written to" in err or (
        f"{twin} and {first} would both be written to" in err
    )
    assert not (tmp_path / "s").exists()  # refused before anything was written
