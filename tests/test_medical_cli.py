"""Issue 13, must-show 1: a public-release-shaped medical scribble set (NIfTI volumes; scribbles
for the training cases only, masks for the validation cases only) goes through the CLI: data
check, 2 training iterations, per-volume 3D Dice + HD95 in mm, and a NIfTI prediction with the
input's affine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from weakseg.cli import main

nibabel = pytest.importorskip("nibabel")


def set_arguments(settings: dict[str, object]) -> list[str]:
    """``--set key=value`` for each setting, as the CLI takes them."""
    return [argument for key, value in settings.items() for argument in ("--set", f"{key}={value}")]


def test_nifti_scribbles_train_eval_predict(tmp_path: Path, capsys) -> None:
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = write_synthetic_volumes(tmp_path / "mri", n_train=2, n_val=1, shape=(32, 32, 4))
    assert not list((root / "masks").glob("case_000*"))  # train: scribbles only
    assert not list((root / "scribbles").glob("case_002*"))  # val: masks only
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "usable for: scribble training" in out and "spacing (mm): 8x1.5x1.5 (1)" in out

    run_dir = tmp_path / "run"
    settings = {
        "dataset": "folder",
        "data_root": str(root),
        "channels": 1,
        "mean": "[127.5]",
        "std": "[63.75]",
        "intensity_percentiles": "[0.5,99.5]",
        "crop_size": 32,
        "scale_range": "null",
        "rotation": 15,
        "rot90_flip": "true",
        "losses": "{dense_crf: {weight: 1.0, sigma_rgb: 15.0, sigma_xy: 10.0}}",
        "rampup_iterations": 2,
        "best_metric": "mean_dice_3d",
        "max_iterations": 2,
        "batch_size": 2,
        "num_workers": 0,
        "progress": "false",
        "tensorboard": "false",
        "output_dir": str(run_dir),
    }
    assert main(["train", *set_arguments(settings)]) == 0
    checkpoint = run_dir / "checkpoint.pth"
    assert checkpoint.is_file() and (run_dir / "best.pth").is_file()
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val"]["volumes"] == 1 and "mean_dice_3d" in record["val"]

    report_path = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "--lcc", "-o", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["volumes"] == 1 and report["hd95_unit"] == "mm" and report["images"] == 4
    assert set(report["per_volume"]) == {"case_002"}
    assert {"dice_3d", "mean_dice_3d", "hd95_3d", "mean_hd95_3d"} <= set(report)
    assert 0.0 <= report["mean_dice_3d"] <= 1.0 and report["mean_hd95_3d"] >= 0.0
    assert "per volume (1)" in capsys.readouterr().out

    image = root / "images" / "case_002.nii.gz"
    assert main(["predict", str(checkpoint), str(image), "-o", str(tmp_path / "pred")]) == 0
    written = nibabel.load(str(tmp_path / "pred" / "case_002.nii.gz"))
    source = nibabel.load(str(image))
    assert written.shape == source.shape == (32, 32, 4)
    np.testing.assert_array_equal(written.affine, source.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}


def test_volume_output_names_cannot_collide(tmp_path: Path) -> None:
    from weakseg.engine.predict import find_images, output_names, prediction_files

    for name in ("a.nii.gz", "a.png", "b.h5", "c.nii"):
        (tmp_path / name).write_bytes(b"")
    paths = find_images([tmp_path])
    assert [p.name for p in paths] == ["a.nii.gz", "a.png", "b.h5", "c.nii"]
    assert output_names(paths) == ["a_nii_gz", "a_png", "b", "c"]
    assert prediction_files("b", volume=True) == ["b.nii.gz"]
    (tmp_path / "c.nii.gz").write_bytes(b"")  # c.nii and c.nii.gz -> c_nii and c_nii_gz
    assert output_names(find_images([tmp_path]))[-2:] == ["c_nii", "c_nii_gz"]


@pytest.mark.parametrize("config", ["acdc_mri_cpu.yaml", "acdc_mri_gpu.yaml"])
def test_shipped_mri_recipes_train(config: str, tmp_path: Path) -> None:
    """Both MRI recipes train as shipped (optimizer, schedule, weight average, autocast, jitter,
    box prior, ramp-up, best.pth by 3D Dice), with only the data and the sizes made small: the
    GPU recipe too, which runs on the CPU unchanged."""
    from weakseg.data.synthetic_volumes import write_synthetic_volumes

    root = write_synthetic_volumes(tmp_path / "mri", n_train=2, n_val=1, shape=(32, 32, 4))
    run_dir = tmp_path / "run"
    small = {
        "data_root": str(root),
        "intensity_percentiles": "[0.5,99.5]",
        "crop_size": 32,
        "max_iterations": 2,
        "batch_size": 2,
        "val_batch_size": 2,
        "num_workers": 0,
        "progress": "false",
        "tensorboard": "false",
        "output_dir": str(run_dir),
    }
    shipped = Path(__file__).parents[1] / "configs" / config
    assert main(["train", "--config", str(shipped), *set_arguments(small)]) == 0
    assert (run_dir / "checkpoint.pth").is_file() and (run_dir / "best.pth").is_file()
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["iteration"] == 2
    assert 0.0 <= record["val"]["mean_dice_3d"] <= 1.0
