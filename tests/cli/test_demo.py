"""``weakseg demo --quick`` end to end (tiny data, 1 epoch: checks the pipeline, not the numbers),
and the boundary band of the demo's error measure against hand-made masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from weakseg.cli import main
from weakseg.engine.predict import load_trained_model
from weakseg.recipes.demo import DEMO_RUNS, DemoSettings, figure_size

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_quick_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("run "))
    assert "val mIoU" in header and "boundary" in header
    for run in DEMO_RUNS:
        line = next(line for line in printed.splitlines() if line.startswith(run.label))
        assert 0.0 <= float(line.split()[-4]) <= 1.0  # the mIoU column

    figure = out / "figure.png"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(figure) as image:
        image.verify()
    with Image.open(figure) as image:
        assert image.mode == "RGB"
        assert image.size == figure_size(DemoSettings.quick().figure_examples)
        assert len(image.getcolors(2**16) or range(2**16)) > 20  # drawn, not blank

    report = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in report["runs"]] == [run.name for run in DEMO_RUNS]
    for result in report["runs"]:
        assert 0.0 <= result["miou"] <= 1.0
        assert 0.0 <= result["boundary_error"] <= 1.0
        assert 0.0 <= result["elsewhere_error"] <= 1.0
    assert report["settings"]["epochs"] == 1
    markdown = (out / "results.md").read_text()
    assert "| pCE + dense CRF |" in markdown and "weakseg demo" in markdown

    # each run's checkpoint is one that `weakseg eval` / `predict` read
    model, checkpoint = load_trained_model(out / "dense_crf" / "checkpoint.pth")
    assert checkpoint["args"]["losses"] == {"dense_crf": DEMO_RUNS[1].losses["dense_crf"]}
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)


def test_demo_rejects_bad_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--quick", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --epochs must be >= 1, got 0\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_without_cuda_fails_before_training(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--quick", "--device", "cuda", "--out", str(tmp_path / "d")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "CUDA" in captured.err
    assert captured.out == "" and not (tmp_path / "d").exists()
