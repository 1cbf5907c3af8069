"""``weakseg proposals grabcut``: one-time GrabCut masks from a folder dataset or a config's
training split, then ``weakseg train`` on them through ``label_dir``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from weakseg.cli import main
from weakseg.data import SyntheticDataset, write_synthetic_dataset
from weakseg.data.io import read_label

pytest.importorskip("cv2")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=3, n_val=2, size=32)


def test_grabcut_for_a_folder_split_then_train_on_it(tmp_path, data_root, capsys) -> None:
    out = tmp_path / "grabcut"
    argv = ["proposals", "grabcut", str(data_root), "--split", "train", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert f"wrote 3 GrabCut proposals to {out}" in capsys.readouterr().out
    ids = (data_root / "splits" / "train.txt").read_text().split()
    assert sorted(p.stem for p in out.glob("*.png")) == ids
    for sample_id in ids:
        proposal = read_label(out / f"{sample_id}.png")
        scribbles = read_label(data_root / "scribbles" / f"{sample_id}.png")
        labeled = scribbles != 255
        assert (proposal[labeled] == scribbles[labeled]).all() and (proposal < 4).all()

    run = tmp_path / "run"
    settings = [
        "dataset=folder",
        f"data_root={data_root}",
        "supervision=full",
        f"label_dir={out}",
        f"output_dir={run}",
        "crop_size=32",
        "batch_size=2",
        "num_workers=0",
        "max_iterations=1",
        "progress=false",
        "tensorboard=false",
    ]
    assert main(["train", *[x for s in settings for x in ("--set", s)]]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["iteration"] == 1 and record["train"]["pce"] > 0


def test_grabcut_from_a_config_writes_to_its_label_dir(tmp_path) -> None:
    config = tmp_path / "grabcut.yaml"
    labels = tmp_path / "labels"
    config.write_text(
        f"dataset: synthetic\nsynthetic_train: 2\nsynthetic_size: 32\nsupervision: full\n"
        f"label_dir: {labels}\n"
    )
    argv = ["proposals", "grabcut", "--config", str(config), "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in labels.glob("*.png")) == [
        "synthetic_00000.png",
        "synthetic_00001.png",
    ]
    _, mask, _ = SyntheticDataset(2, 32, seed=0).generate(1)  # the config's training split
    assert (read_label(labels / "synthetic_00001.png") == mask).mean() > 0.6
    # existing masks are kept unless --overwrite (an interrupted run continues)
    (labels / "synthetic_00000.png").write_bytes(b"")
    assert main([*argv, "--set", "synthetic_train=1"]) == 0
    assert (labels / "synthetic_00000.png").stat().st_size == 0
    assert main([*argv, "--set", "synthetic_train=1", "--overwrite"]) == 0
    assert read_label(labels / "synthetic_00000.png").shape == (32, 32)


def test_errors(tmp_path, data_root, capsys) -> None:
    cases = [
        ([], r"give either DATA_ROOT \(a folder dataset\) or --config"),
        ([str(data_root)], r"-o/--output is required with DATA_ROOT"),
        ([str(tmp_path / "none"), "-o", "x"], r"dataset folder not found: .*none"),
        ([str(data_root), "--split", "test", "-o", "x"], r"split file not found: .*test.txt"),
        (["--config", str(tmp_path / "no.yaml")], r"config file not found: .*no.yaml"),
        ([str(data_root), "--set", "lr=1", "-o", "x"], r"--set needs --config"),
    ]
    config = tmp_path / "c.yaml"
    config.write_text("dataset: synthetic\nsynthetic_train: 1\nlrr: 0.1\n")
    cases.append((["--config", str(config)], r"unknown config key 'lrr'"))
    config2 = tmp_path / "c2.yaml"
    config2.write_text("dataset: synthetic\nsynthetic_train: 1\n")
    cases.append(
        (["--config", str(config2)], r"-o/--output is required: .*c2.yaml sets no label_dir")
    )
    for argv, message in cases:
        assert main(["proposals", "grabcut", *argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), (argv, err)
        assert re.search(message, err), (argv, err)
    assert main(["proposals"]) == 2  # usage
