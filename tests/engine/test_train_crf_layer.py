"""weakseg.engine.train with ``crf_layer`` (Table 4): training through CRF-as-RNN, the
checkpoint that eval and predict rebuild, and the config errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weakseg.cli import main
from weakseg.engine.config import ConfigError, load_config
from weakseg.engine.predict import load_trained_model
from weakseg.engine.train import train
from weakseg.models import CRFLayerModel

CRF_LAYER = "crf_layer={n_iter: 2, theta_alpha: 8.0, backend: exact}"


pytestmark = pytest.mark.usefixtures("one_thread")
NORMALIZATION = ("mean=[100.0, 110.0, 120.0]", "std=[50.0, 55.0, 60.0]")


def test_crf_layer_training_updates_the_layer_and_the_checkpoint_restores_it(
    tmp_path, tiny_config
) -> None:
    record = train(tiny_config(CRF_LAYER, *NORMALIZATION, "losses={grid_potts: {weight: 0.1}}"))
    assert record["iteration"] == 2 and set(record["train"]) == {"pce", "grid_potts", "loss"}
    assert all(math.isfinite(value) for value in record["train"].values())
    model, checkpoint = load_trained_model(tmp_path / "run" / "checkpoint.pth")
    assert isinstance(model, CRFLayerModel) and not model.training
    assert checkpoint["model_config"]["crf_layer"] == {
        "n_iter": 2,
        "theta_alpha": 8.0,
        "backend": "exact",
    }
    assert model.mean == (100.0, 110.0, 120.0) and model.std == (50.0, 55.0, 60.0)
    assert model.crf.n_iter == 2 and model.crf.theta_alpha == 8.0
    # two AdamW steps moved every CRF parameter away from its initialization: they had gradients
    eye = torch.eye(4)
    assert not torch.allclose(model.crf.compat, 1 - eye)
    assert not torch.allclose(model.crf.bilateral_weight, 4.0 * eye)
    assert not torch.allclose(model.crf.gaussian_weight, 3.0 * eye)
    for key, value in checkpoint["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_eval_and_predict_use_the_wrapped_model(tmp_path, tiny_config) -> None:
    from PIL import Image

    train(tiny_config(CRF_LAYER))
    checkpoint = tmp_path / "run" / "checkpoint.pth"
    report = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "--crf", "-o", str(report)]) == 0
    assert 0 <= json.loads(report.read_text())["miou"] <= 1
    image = tmp_path / "in.png"
    Image.new("RGB", (20, 24), (200, 30, 60)).save(image)
    assert main(["predict", str(checkpoint), str(image), "-o", str(tmp_path / "pred")]) == 0
    assert Image.open(tmp_path / "pred" / "in.png").size == (20, 24)


def test_resume_restores_the_crf_parameters(tmp_path, tiny_config) -> None:
    # 1 step, then resumed for a 2nd, equals 2 uninterrupted steps (constant LR: lr_power 0)
    common = (CRF_LAYER, "lr_power=0", "val_split=null")
    train(tiny_config(*common, "max_iterations=1", root=tmp_path / "a"))
    train(tiny_config(*common, "max_iterations=2", "resume=auto", root=tmp_path / "a"))
    train(tiny_config(*common, "max_iterations=2", root=tmp_path / "b"))
    resumed, _ = load_trained_model(tmp_path / "a" / "run" / "checkpoint.pth")
    straight, _ = load_trained_model(tmp_path / "b" / "run" / "checkpoint.pth")
    for name, parameter in straight.crf.named_parameters():
        torch.testing.assert_close(resumed.crf.get_parameter(name), parameter)
    assert not torch.allclose(straight.crf.compat, 1 - torch.eye(4))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{n_iter: -1}", r"crf_layer: n_iter must be >= 0, got -1"),
        ("{n_iter: 2.5}", r"crf_layer.n_iter must be an integer, got 2.5"),
        ("{theta_alpha: 0}", r"crf_layer: theta_alpha must be .*got 0"),
        ("{w_bilateral: -2}", r"crf_layer: w_bilateral must be a finite number >= 0, got -2"),
        ("{backend: gpu}", r"crf_layer: backend must be one of .* got 'gpu'"),
        ("{normalization: l2}", r"crf_layer: normalization must be one of .* got 'l2'"),
        ("{n_itr: 5}", r"unknown parameter 'n_itr' in crf_layer .*did you mean 'n_iter'"),
        ("{num_classes: 5}", r"unknown parameter 'num_classes' in crf_layer"),
        ("5", r"config key 'crf_layer' must be a mapping, got 5"),
    ],
)
def test_crf_layer_config_errors_name_key_and_value(value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"crf_layer={value}"])


def test_crf_layer_defaults_and_off() -> None:
    assert load_config(None).crf_layer is None
    assert load_config(None, ["crf_layer={}"]).crf_layer == {}
    assert load_config(None, ["crf_layer={n_iter: 5.0}"]).crf_layer == {"n_iter": 5}
