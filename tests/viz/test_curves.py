"""weakseg.viz.curves: reading losses.jsonl / metrics.jsonl, ticks, smoothing, the figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from weakseg.data.io import DataError
from weakseg.viz.curves import (
    RUN_COLOURS,
    LossLog,
    curves_size,
    nice_ticks,
    read_loss_log,
    render_curves,
    run_labels,
    smooth,
)


def write_losses(run: Path, lines: list[dict], tail: str = "") -> Path:
    """A run folder with ``losses.jsonl`` holding ``lines`` (and ``tail`` unterminated)."""
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines) + tail
    (run / "losses.jsonl").write_text(text)
    return run


def write_metrics(run: Path, epochs: list[dict[str, float]], steps: int = 5) -> Path:
    """A run folder with only ``metrics.jsonl``: one line per epoch of ``steps`` iterations."""
    run.mkdir(parents=True, exist_ok=True)
    lines = [
        {"epoch": e, "iteration": (e + 1) * steps, "lr": 0.1 / (e + 1), "train": t, "time": 1.0}
        for e, t in enumerate(epochs)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_read_losses_jsonl_sorted_later_lines_win(tmp_path: Path) -> None:
    run = write_losses(
        tmp_path / "gd",
        [
            {"iteration": 10, "epoch": 0, "lr": 0.01, "pce": 2.0, "dense_crf": 0.5, "loss": 2.5},
            {"iteration": 20, "epoch": 0, "lr": 0.009, "pce": 1.0, "dense_crf": 0.4, "loss": 1.4},
            # resumed from the checkpoint at iteration 10: 20 logged again
            {"iteration": 20, "epoch": 0, "lr": 0.009, "pce": 1.5, "dense_crf": 0.3, "loss": 1.8},
            {"iteration": 30, "epoch": 1, "lr": 0.008, "pce": 0.5, "dense_crf": 0.2, "loss": 0.7},
        ],
        tail='{"iteration": 40, "pce": 0.',  # being written
    )
    log = read_loss_log(run)
    assert log.path == run / "losses.jsonl" and not log.per_epoch
    assert log.terms == ["pce", "dense_crf", "loss"]  # lr is a series, not a loss term
    iterations, values = log.series["pce"]
    assert iterations.tolist() == [10, 20, 30] and values.tolist() == [2.0, 1.5, 0.5]
    assert log.series["lr"][1].tolist() == [0.01, 0.009, 0.008]


def test_read_metrics_jsonl_when_there_is_no_losses_jsonl(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "old", [{"pce": 1.0, "loss": 1.0}, {"pce": 0.6, "loss": 0.6}])
    log = read_loss_log(run)
    assert log.per_epoch and log.path.name == "metrics.jsonl"
    assert log.terms == ["pce", "loss"]
    assert log.series["pce"][0].tolist() == [5, 10] and log.series["pce"][1].tolist() == [1.0, 0.6]
    assert log.series["lr"][1].tolist() == [0.1, 0.05]


def test_read_loss_log_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run folder not found: .*nothing"):
        read_loss_log(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no losses.jsonl or metrics.jsonl in .*empty"):
        read_loss_log(tmp_path / "empty")
    bad = write_losses(tmp_path / "bad", [{"iteration": 1, "pce": 1.0}], tail="")
    (bad / "losses.jsonl").write_text('{"iteration": 1, "pce": 1.0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(DataError, match=r"bad.losses\.jsonl, line 2: not valid JSON"):
        read_loss_log(bad)
    (bad / "losses.jsonl").write_text('{"epoch": 0, "pce": 1.0}\n')
    with pytest.raises(DataError, match=r"losses\.jsonl, line 1: expected a JSON object with an"):
        read_loss_log(bad)
    (bad / "losses.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"losses\.jsonl holds no records"):
        read_loss_log(bad)
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"iteration": 5, "epoch": 0}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl, line 1: no 'train' object"):
        read_loss_log(old)


def test_ticks_smoothing_and_labels(tmp_path: Path) -> None:
    assert nice_ticks(0, 10).tolist() == [0, 2, 4, 6, 8, 10]
    np.testing.assert_allclose(nice_ticks(0.13, 0.87), [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(nice_ticks(-3e9, -1e9), [-3e9, -2.5e9, -2e9, -1.5e9, -1e9])
    assert smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert smooth(np.array([1.0, 3.0]), 1).tolist() == [1.0, 3.0]
    assert run_labels([tmp_path / "gd", tmp_path / "adm"]) == ["gd", "adm"]
    assert run_labels([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a/run", "b/run"]


def _colour_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((image == np.array(colour)).all(axis=-1).sum())


def test_render_curves_panels_lines_and_missing_terms(tmp_path: Path) -> None:
    lines = [
        {"iteration": i, "epoch": 0, "lr": 0.01, "pce": 1 / i, "dense_crf": 0.5 - i / 400}
        for i in range(1, 101)
    ]
    logs = {
        "gd": read_loss_log(write_losses(tmp_path / "gd", lines)),
        "adm": read_loss_log(write_metrics(tmp_path / "adm", [{"pce": 0.8}, {"pce": 0.3}], 50)),
    }
    figure = render_curves(logs, ["pce", "dense_crf"])
    assert figure.mode == "RGB" and figure.size == curves_size(2, 2)
    pixels = np.asarray(figure)
    panel_width = curves_size(1, 2)[0] - 16  # one panel between two 8 px margins
    legend_top = figure.height - 2 * 18 - 4
    left, right = pixels[:legend_top, : 8 + panel_width], pixels[:legend_top, 8 + panel_width :]
    gd, adm = RUN_COLOURS[0], RUN_COLOURS[1]
    assert _colour_pixels(left, gd) > 200 and _colour_pixels(left, adm) > 50  # pce: both runs
    assert _colour_pixels(right, gd) > 200 and _colour_pixels(right, adm) == 0  # adm lacks it
    assert _colour_pixels(pixels[legend_top:], adm) > 0  # the legend lists every run

    single = render_curves({"gd": logs["gd"]}, smooth_window=10)  # default: every loss term
    assert single.size == curves_size(2, 1)
    assert render_curves({"adm": logs["adm"]}, ["lr"]).size == curves_size(1, 1)


def test_render_curves_errors(tmp_path: Path) -> None:
    log = read_loss_log(write_losses(tmp_path / "r", [{"iteration": 1, "pce": 1.0}]))
    with pytest.raises(ValueError, match=r"no run logs the term 'dense_crf'; the runs log: pce"):
        render_curves({"r": log}, ["pce", "dense_crf"])
    with pytest.raises(ValueError, match=r"smooth_window must be >= 1, got 0"):
        render_curves({"r": log}, smooth_window=0)
    with pytest.raises(ValueError, match=r"no run to plot"):
        render_curves({})
    lr_only = LossLog(tmp_path / "x", False, {"lr": (np.array([1.0]), np.array([0.1]))})
    with pytest.raises(ValueError, match=r"hold no loss term"):
        render_curves({"x": lr_only})
