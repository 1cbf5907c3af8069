"""The medical-recipe settings of the training config: volume keys, augmentation, regularizer
ramp-up and the metric that picks best.pth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from weakseg.engine.config import ConfigError, load_config
from weakseg.engine.train import rampup_factor, train


def test_rampup_factor_closed_form() -> None:
    assert rampup_factor(0, 100) == pytest.approx(math.exp(-5.0))
    assert rampup_factor(50, 100) == pytest.approx(math.exp(-1.25))
    assert rampup_factor(100, 100) == 1.0 == rampup_factor(500, 100) == rampup_factor(3, 0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("slice_axis=3", "slice_axis must be in -3..2 or null, got 3"),
        ("intensity_percentiles=[99,1]", r"intensity_percentiles must be \[low, high\] with 0"),
        ("intensity_percentiles=[1]", r"intensity_percentiles must be \[low, high\]"),
        ("volume_pattern=(", r"volume_pattern '\(' is not a valid regular expression"),
        ("rotation=200", r"rotation must be in \[0, 180\] degrees, got 200"),
        ("rampup_iterations=-1", "rampup_iterations must be >= 0, got -1"),
        ("best_metric=mean_hd95_3d", "best_metric must be one of miou, mean_dice, pixel_accuracy"),
    ],
)
def test_medical_keys_rejected_with_their_name(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_rampup_and_best_by_3d_dice(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "synthetic_train=4",
            "synthetic_val=2",
            "synthetic_size=32",
            "crop_size=32",
            "batch_size=2",
            "max_iterations=4",
            "log_every=1",
            "num_workers=0",
            "progress=false",
            "tensorboard=false",
            "rotation=20",
            "rot90_flip=true",
            "losses={dense_crf: {weight: 2.0, sigma_rgb: 15.0, sigma_xy: 10.0, "
            "normalization: affinity, scale_factor: 1.0}}",
            "rampup_iterations=4",
            "best_metric=mean_dice_3d",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    record = train(config)
    assert "mean_dice_3d" in record["val"] and (tmp_path / "run" / "best.pth").is_file()
    lines = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    # the logged dense CRF term is weight(i) * R; its ratio to the unweighted value is weight(i)
    ratios = [
        line["dense_crf"] / line["dense_crf_value"] for line in lines if "dense_crf_value" in line
    ]
    expected = [2.0 * rampup_factor(i, 4) for i in range(4)]
    # logged for the affinity-normalized full-resolution loss; step i used weight(i)
    assert ratios == pytest.approx(expected, rel=1e-4)
    assert config.objective()["dense_crf"].weight == 2.0  # restored after the run


@pytest.mark.parametrize(
    ("supervised", "params"),
    [("dice", {"weight": 1.0}), ("densecrf_adm", {}), ("sec", {})],  # ADM, SEC: no weight
)
def test_rampup_leaves_supervised_terms_alone(supervised: str, params: dict) -> None:
    """Dice, and the terms that replace pCE (ADM, SEC), count in full from the first step."""
    from types import SimpleNamespace

    from weakseg.engine.train import RegularizerRampUp
    from weakseg.losses import build_objective

    objective = build_objective({supervised: params, "grid_potts": {"weight": 2.0}})
    run = SimpleNamespace(
        objective=objective,
        config=SimpleNamespace(rampup_iterations=100),
        state={"iteration": 0},
    )
    rampup = RegularizerRampUp(run)
    assert rampup.base == {"grid_potts": 2.0}
    rampup.on_fit_start(run)
    if "weight" in params:
        assert objective[supervised].weight == params["weight"]
    assert objective["grid_potts"].weight == pytest.approx(2.0 * math.exp(-5.0))
