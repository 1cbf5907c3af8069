"""``weakseg experiment`` end to end: a two-iteration recipe on a tiny folder data set trains,
evaluates in subprocesses and writes the results table; a GrabCut prepare step writes the masks
its run trains on; bad recipes are clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from weakseg.cli import main
from weakseg.data import write_synthetic_dataset
from weakseg.recipes.experiments import load_experiment, run_experiment

SRC = Path(__file__).resolve().parents[2] / "src"


def test_experiment_trains_evaluates_and_tabulates(tmp_path, monkeypatch, capsys) -> None:
    data_root = write_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, size=32)
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "dataset": "folder",
                "data_root": str(data_root),
                "model": "unet",
                "crop_size": 32,
                "batch_size": 2,
                "num_workers": 0,
                "tensorboard": False,
                "progress": False,
            }
        )
    )
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "title": "Tiny table",
                "defaults": {"max_iterations": 2},
                "runs": [
                    {"name": "pce", "label": "pCE only", "config": str(base)},
                    {
                        "name": "crf",
                        "label": "pCE + CRF",
                        "config": str(base),
                        "set": {"losses": {"dense_crf": {"weight": 1.0, "sigma_xy": 10.0}}},
                    },
                ],
            }
        )
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    )
    output = tmp_path / "out"
    assert main(["experiment", str(recipe), "-o", str(output)]) == 0
    text = (output / "results.md").read_text()
    rows = re.findall(r"^\| (pCE only|pCE \+ CRF) \| (\d\.\d{3}) \| (\d\.\d{3}) \|$", text, re.M)
    assert [row[0] for row in rows] == ["pCE only", "pCE + CRF"]
    for run in ("pce", "crf"):
        assert (output / run / "checkpoint.pth").is_file()
        assert (output / run / "eval_plain.json").is_file()
    assert "--set max_iterations=2" in text and "resume=auto" in text
    assert "wrote" in capsys.readouterr().out


def test_experiment_errors(tmp_path, capsys) -> None:
    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"error: .*missing\.yaml does not exist", err), err
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"runs": [{"name": "a", "config": "c.yaml"}]}))
    assert main(["experiment", str(recipe), "--only", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"error: .*unknown run\(s\) \['b'\]", err), err


def test_experiment_prepares_grabcut_masks_then_trains_on_them(tmp_path) -> None:
    base = tmp_path / "grabcut.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "dataset": "synthetic",
                "synthetic_train": 4,
                "synthetic_val": 2,
                "synthetic_size": 32,
                "supervision": "full",
                "crop_size": 32,
                "batch_size": 2,
                "num_workers": 0,
                "tensorboard": False,
                "progress": False,
            }
        )
    )
    recipe = tmp_path / "table2.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "defaults": {"max_iterations": 1, "seed": 5},
                "runs": [
                    {
                        "name": "grabcut",
                        "config": str(base),
                        "set": {"label_dir": "{run_dir}/masks"},
                        "prepare": [
                            {
                                "command": "proposals grabcut --config {config} {settings} "
                                "--n-iter 1 --no-progress",
                                "creates": "{run_dir}/masks",
                            }
                        ],
                    }
                ],
            }
        )
    )
    output = tmp_path / "out"
    # the real commands, in this process (a subprocess each costs seconds of start-up)
    run_experiment(load_experiment(recipe), output, executor=lambda arguments, _: main(arguments))
    masks = sorted(path.name for path in (output / "grabcut" / "masks").iterdir())
    # the masks of the training images that the run's settings (seed 5) generate
    assert masks == [f"synthetic_{index:05d}.png" for index in range(4)]
    assert (output / "grabcut" / "eval_plain.json").is_file()
    text = (output / "results.md").read_text()
    assert f"weakseg proposals grabcut --config {base} --set max_iterations=1" in text
    assert f"--set label_dir={output}/grabcut/masks" in text
