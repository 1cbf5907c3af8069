"""weakseg.engine.config: YAML defaults, --set overrides, and every error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weakseg.engine.config import ConfigError, TrainConfig, build_regularizers, load_config
from weakseg.losses import DenseCRFLoss

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_and_yaml_and_overrides(tmp_path) -> None:
    assert load_config() == TrainConfig()
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nepochs: 3\nlosses:\n  dense_crf: {weight: 2e-9, sigma_xy: 100}\n")
    config = load_config(path, ["epochs=7", "losses.dense_crf.weight=1e-9", "scale_range=null"])
    assert config.lr == 0.5 and config.epochs == 7 and config.scale_range is None
    assert config.losses == {"dense_crf": {"weight": 1e-9, "sigma_xy": 100}}
    modules = build_regularizers(config.losses)
    assert isinstance(modules["dense_crf"], DenseCRFLoss)
    assert modules["dense_crf"].weight == pytest.approx(1e-9)  # YAML '1e-9' is a string
    assert load_config(None, ["lr=3"]).lr == 3.0 and isinstance(
        load_config(None, ["lr=3"]).lr, float
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    modules = build_regularizers(config.losses)
    assert set(modules) == set(config.losses)


def test_shipped_configs_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"synthetic", "acdc_unet_pce", "acdc_unet_densecrf", "voc_largefov_pce"} <= names


def test_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' .*did you mean 'lr'"):
        load_config(None, ["lrr=0.1"])
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nbatchsize: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'batchsize' in .*bad.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'epochs' must be an integer, got 'ten'"):
        load_config(None, ["epochs=ten"])
    with pytest.raises(ConfigError, match=r"'amp' must be true or false, got 1"):
        load_config(None, ["amp=1"])
    with pytest.raises(ConfigError, match=r"--set expects key=value, got 'lr'"):
        load_config(None, ["lr"])
    with pytest.raises(ConfigError, match=r"--set 'lr.x=1': lr is not a mapping"):
        load_config(None, ["lr=0.1", "lr.x=1"])
    with pytest.raises(ConfigError, match=r"unknown regularizer 'densecrf' .*'dense_crf'"):
        load_config(None, ["losses={densecrf: {}}"])
    with pytest.raises(ConfigError, match=r"unknown parameter 'sigma' in losses.dense_crf"):
        load_config(None, ["losses.dense_crf.sigma=3"])
    with pytest.raises(ConfigError, match=r"losses.dense_crf: .*sigma_xy"):
        load_config(None, ["losses.dense_crf.sigma_xy=-1"])
    with pytest.raises(ConfigError, match=r"optimizer must be one of sgd, adamw, got 'adam'"):
        load_config(None, ["optimizer=adam"])
    with pytest.raises(ConfigError, match=r"data_root must be set for dataset='folder'"):
        load_config(None, ["dataset=folder"])
    with pytest.raises(ConfigError, match=r"batch_size must be >= 1, got 0"):
        load_config(None, ["batch_size=0"])
    with pytest.raises(FileNotFoundError, match=r"config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping of config keys"):
        load_config(path)
    path.write_text("lr: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*bad.yaml"):
        load_config(path)


def test_proposal_modes_and_their_errors() -> None:
    from weakseg.proposals import DenseCRFADMLoss

    config = load_config(None, ["losses={densecrf_adm: {sigma_xy: '2e1', n_iter: 3}}"])
    module = build_regularizers(config.losses)["densecrf_adm"]
    assert isinstance(module, DenseCRFADMLoss) and module.sigma_xy == 20.0
    compat = [[0, 1], [1, 0]]
    module = build_regularizers({"densecrf_adm": {"compat": compat}})["densecrf_adm"]
    assert module.compat.tolist() == compat  # a YAML list becomes the K x K tensor
    config = load_config(None, ["proposal_every=2", "proposal_crf={n_iter: 2, theta_beta: '1e1'}"])
    assert config.proposal_crf == {"n_iter": 2, "theta_beta": 10.0}
    assert load_config(None, ["supervision=full", "label_dir=masks"]).label_dir == "masks"
    cases = [
        (["losses={densecrf_adm: {}, dense_crf: {}}"], r"densecrf_adm \(ADM\) and dense_crf"),
        (
            ["losses={densecrf_adm: {sigma: 1}}"],
            r"unknown parameter 'sigma' in losses.densecrf_adm",
        ),
        (["losses={densecrf_adm: {compat: [[0, 1], [1]]}}"], r"losses.densecrf_adm: "),
        (["label_dir=m"], r"label_dir='m' holds full masks: set supervision: full"),
        (["supervision=full", "label_dir=m", "proposal_every=1"], r"exclude each other"),
        (["proposal_every=0"], r"proposal_every must be >= 1"),
        (["proposal_every=1", "supervision=full"], r"start from scribbles"),
        (["proposal_method=gc"], r"proposal_method must be one of crf, grabcut, got 'gc'"),
        (["proposal_crf={n_iters: 2}"], r"unknown parameter 'n_iters' in proposal_crf.*'n_iter'"),
        (["proposal_crf={w_bilateral: -1}"], r"proposal_crf: w_bilateral must be .* >= 0, got -1"),
        (["proposal_crf={normalization: l1}"], r"proposal_crf: .*normalization"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


def test_model_options_reach_the_network_and_the_checkpoint_config() -> None:
    from weakseg.engine.train import build_network

    config = load_config(None, ["model_options={base_channels: 8, depth: 2, dropout: 0.1}"])
    model, model_config = build_network(config, num_classes=3, in_channels=1)
    assert model_config["options"] == {"base_channels": 8, "depth": 2, "dropout": 0.1}
    first = next(model.parameters())
    assert first.shape[0] == 8  # the first convolution has base_channels filters
    with pytest.raises(ConfigError, match=r"unknown option 'dropuot' in model_options .*'dropout'"):
        load_config(None, ["model_options={dropuot: 0.1}"])
    with pytest.raises(ConfigError, match=r"model_options for model='deeplab_largefov'.*none"):
        load_config(None, ["model=deeplab_largefov", "model_options={depth: 2}"])


def test_scribble_box_margin_checked() -> None:
    assert TrainConfig.from_dict({"scribble_box_margin": 10}).scribble_box_margin == 10
    with pytest.raises(ConfigError, match=r"scribble_box_margin must be >= 0 or null, got -1"):
        TrainConfig.from_dict({"scribble_box_margin": -1})
    with pytest.raises(ConfigError, match=r"applies to supervision scribbles or clicks, got "):
        TrainConfig.from_dict({"scribble_box_margin": 5, "supervision": "full"})


def test_pce_class_balanced_reaches_the_objective() -> None:
    """The objective's pCE follows ``pce_class_balanced`` (rebuilt when the setting changes)."""
    from weakseg.losses import partial_cross_entropy

    config = TrainConfig.from_dict({"losses": {}})
    assert config.objective().pce_class_balanced is False
    config.pce_class_balanced = True
    objective = config.objective()
    assert objective.pce_class_balanced is True
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, 6)
    labels = torch.full((1, 6, 6), 255)
    labels[0, :4], labels[0, 5, 0] = 0, 2  # 24 pixels of class 0, one of class 2
    total, _ = objective(logits, {"label": labels})
    expected = partial_cross_entropy(logits, labels, class_balanced=True)
    torch.testing.assert_close(total, expected)
    assert expected != partial_cross_entropy(logits, labels)
    with pytest.raises(ConfigError, match=r"'pce_class_balanced' must be true or false"):
        TrainConfig.from_dict({"pce_class_balanced": "yes"})
