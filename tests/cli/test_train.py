"""``weakseg train`` end to end: train -> eval -> predict on a tiny folder data set, an external
SIGTERM + ``--resume`` reaching the weights of an uninterrupted run, and torchrun on gloo."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from weakseg.cli import main
from weakseg.data import write_synthetic_dataset
from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.config import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_val=2, size=32)


def _settings(data_root: Path, output_dir: Path, *extra: str) -> list[str]:
    settings = [
        "dataset=folder",
        f"data_root={data_root}",
        f"output_dir={output_dir}",
        "model=unet",
        "crop_size=32",
        "batch_size=2",
        "num_workers=0",
        "tensorboard=false",
        "progress=false",
        *extra,
    ]
    return [item for setting in settings for item in ("--set", setting)]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def test_train_eval_predict(tmp_path, data_root, capsys) -> None:
    run = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text("max_iterations: 2\nlosses:\n  dense_crf: {weight: 1.0e-1, sigma_xy: 10}\n")
    assert main(["train", "--config", str(config), *_settings(data_root, run)]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["iteration"] == 2
    assert set(record["train"]) == {"pce", "dense_crf", "dense_crf_value", "loss"}
    # dense_crf is weighted (1e-1), dense_crf_value is the unweighted R(S) / 1'W1
    assert record["train"]["dense_crf"] == pytest.approx(0.1 * record["train"]["dense_crf_value"])
    checkpoint = load_checkpoint(run / "checkpoint.pth")
    assert checkpoint["iteration"] == 2 and checkpoint["model_config"]["num_classes"] == 4

    report = tmp_path / "eval.json"
    assert main(["eval", str(run / "checkpoint.pth"), "--crf", "--flip", "-o", str(report)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "mean Dice (fg)" in out and "speckle" in out
    metrics = json.loads(report.read_text())
    assert metrics["images"] == 2 and metrics["crf"] is True
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0 and set(metrics["dice"]) >= {"background"}

    predictions = tmp_path / "pred"
    assert (
        main(["predict", str(run / "best.pth"), str(data_root / "images"), "-o", str(predictions)])
        == 0
    )
    masks = sorted(predictions.glob("synthetic_*[0-9].png"))
    assert len(masks) == 10 and len(list(predictions.glob("*_overlay.png"))) == 10
    mask = Image.open(masks[0])
    assert mask.mode == "P" and mask.size == (32, 32)
    assert Image.open(predictions / "synthetic_00000_overlay.png").mode == "RGB"


def test_train_cli_errors(tmp_path, data_root, capsys) -> None:
    cases = [
        (["--set", "epoch=3"], r"unknown config key 'epoch' .*did you mean 'epochs'"),
        (["--config", str(tmp_path / "nope.yaml")], r"config file not found: .*nope.yaml"),
    ]
    root = write_synthetic_dataset(tmp_path / "nomasks", n_train=2, n_val=1, size=32)
    for mask in (root / "masks").iterdir():
        mask.unlink()
    (root / "masks").rmdir()
    settings = _settings(root, tmp_path / "r", "val_split=train", "max_iterations=1")
    cases.append(
        (settings, r"missing mask file for id 'synthetic_00000' \(listed in .*train\.txt\)")
    )
    # the pretrained file: missing, or a pickle that could run code (refused, not unpickled)
    torch.save(argparse.Namespace(), tmp_path / "pickled.pth")
    for name, message in [
        ("nope.pth", r"pretrained weights file not found: .*nope\.pth$"),
        ("pickled.pth", r"refused pretrained weights file .*pickled\.pth: it holds a pickled"),
    ]:
        pretrained = f"pretrained={tmp_path / name}"
        settings = _settings(data_root, tmp_path / f"p_{name}", pretrained, "max_iterations=1")
        cases.append((settings, message))
    for arguments, message in cases:
        assert main(["train", *arguments]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.match(r"error: " + message, err), err
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch' .*did you mean 'epochs'"):
        main(["--debug", "train", "--set", "epoch=3"])


def test_print_config(capsys) -> None:
    assert main(["train", "--set", "lr=0.5", "--print-config"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


_RUNNER = """
import sys, time
import weakseg.engine.train as engine

original, count = engine.train_step, [0]

def slow_step(*args, **kwargs):  # report each step; leave time to be killed from step 3 on
    terms = original(*args, **kwargs)
    count[0] += 1
    print(f"step {count[0]}", flush=True)
    if count[0] >= 3:
        time.sleep(1.0)
    return terms

engine.train_step = slow_step
from weakseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, data_root) -> None:
    # 8 images / batch 2 = 4 steps per epoch; 6 steps cross an epoch boundary after the kill
    common = ["max_iterations=6", "checkpoint_every=100", "losses={grid_potts: {weight: 0.2}}"]
    reference = tmp_path / "reference"
    assert main(["train", *_settings(data_root, reference, *common)]) == 0

    killed = tmp_path / "killed"
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    command = [sys.executable, str(runner), "train", *_settings(data_root, killed, *common)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        for line in process.stdout:
            if line.strip() == "step 3":
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by signal" in stderr
    stopped = load_checkpoint(killed / "checkpoint.pth")
    assert stopped["iteration"] in (3, 4)

    assert main(["train", *_settings(data_root, killed, *common), "--resume", "auto"]) == 0
    final = load_checkpoint(killed / "checkpoint.pth")
    expected = load_checkpoint(reference / "checkpoint.pth")
    assert final["iteration"] == expected["iteration"] == 6
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key in ("lr_scheduler", "epoch"):
        assert final[key] == expected[key]


def test_torchrun_two_cpu_processes_gloo(tmp_path, data_root) -> None:
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "weakseg",
        "train",
        *_settings(data_root, run, "max_iterations=2", "batch_size=1"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=_env(), timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # rank 0 writes
    checkpoint = load_checkpoint(run / "checkpoint.pth")
    assert checkpoint["iteration"] == 2 and set(checkpoint["rng"]) == {"0", "1"}
    assert json.loads(lines[0])["val"]["pixels"] == 2 * 32 * 32  # both shards reduced
