"""Training on slabs of adjacent slices (``slab_slices``): the config's combination rules, the
objective on a slab (the 3D regularizer plus pCE on every slice), the loader's batches, the
per-slice training unchanged, exact resume mid-epoch, and the CLI: train, resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weakseg.cli import main
from weakseg.data import SlabDataset
from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.config import ConfigError, load_config
from weakseg.engine.loaders import build_datasets, build_train_loader
from weakseg.engine.train import (
    TrainingInterrupted,
    build,
    compute_loss,
    default_hooks,
    fit,
    prepare_output_dir,
    train,
)
from weakseg.losses import DenseCRFLoss, build_objective

from ._hooks import InterruptAt

pytestmark = pytest.mark.usefixtures("one_thread")

_FOLDER = ["dataset=folder", "data_root=data", "slab_slices=3"]
_SPACED = "losses={dense_crf: {weight: 1.0, spacing: [5, 1, 1]}}"


def test_slab_config_accepted_and_default_is_single_slices() -> None:
    assert load_config(None, []).slab_slices == 1
    config = load_config(None, [*_FOLDER, _SPACED])
    assert config.slab_slices == 3 and config.losses["dense_crf"]["spacing"] == [5, 1, 1]
    assert load_config(None, [*_FOLDER, "losses={}"]).slab_slices == 3  # pCE alone


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["slab_slices=0"], "slab_slices must be >= 1, got 0"),
        (["slab_slices=3"], "slab_slices=3 needs dataset: folder .* got dataset='synthetic'"),
        ([*_FOLDER, "crf_layer={}"], r"slab_slices=3 does not work with crf_layer=\{\}"),
        ([*_FOLDER, "proposal_every=1"], "slab_slices=3 does not work with proposal_every=1"),
        (
            [*_FOLDER, "supervision=full", "label_dir=masks"],
            "slab_slices=3 does not work with label_dir='masks'",
        ),
        (
            [*_FOLDER, "losses={densecrf_adm: {}}"],
            "slab_slices=3 does not work with losses.densecrf_adm",
        ),
        ([*_FOLDER, "losses={sec: {}}"], "slab_slices=3 does not work with losses.sec"),
        ([*_FOLDER, "unlabeled_split=extra"], "does not work with unlabeled_split='extra'"),
        ([*_FOLDER, "labeled_fraction=0.5"], "does not work with labeled_fraction=0.5"),
        (
            [*_FOLDER, "losses={dense_crf: {weight: 1.0}}"],
            r"slab_slices=3: losses.dense_crf needs spacing: \[z, 1, 1\].* got None",
        ),
        (
            [*_FOLDER, "losses={kernel_cut: {weight: 1.0, spacing: [1, 1]}}"],
            r"losses.kernel_cut needs spacing: \[z, 1, 1\].* got \[1, 1\]",
        ),
    ],
)
def test_slab_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.fixture(scope="module")
def mri(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 training volumes of 5 slices (scribbles), 1 validation volume (masks), NIfTI."""
    pytest.importorskip("nibabel")
    from weakseg.data import write_synthetic_volumes

    root = tmp_path_factory.mktemp("mri")
    return write_synthetic_volumes(root, n_train=2, n_val=1, shape=(32, 32, 5))


def _settings(root: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "dataset=folder",
        f"data_root={root}",
        "channels=1",
        "mean=[127.5]",
        "std=[63.75]",
        "intensity_percentiles=[0.5,99.5]",
        "crop_size=32",
        "scale_range=[0.8,1.25]",
        "rotation=15",
        "rot90_flip=true",
        "hflip=0",
        "model_options={base_channels: 8, depth: 3}",
        "batch_size=2",
        "num_workers=0",
        "progress=false",
        "tensorboard=false",
        "seed=3",
        f"output_dir={output_dir}",
        *extra,
    ]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_objective_on_slabs_is_the_3d_loss_plus_pce_on_every_slice() -> None:
    torch.manual_seed(0)
    b, s, k, h, w = 2, 3, 3, 10, 8
    image_raw = torch.rand(b, s, 1, h, w) * 255
    label = torch.full((b, s, h, w), 255)
    label[:, :, 2:4, 1:5] = torch.randint(0, k, (b, s, 2, 4))
    valid = torch.ones(b, s, h, w, dtype=torch.bool)
    valid[1, :, -3:] = False  # padding
    batch = {"image_raw": image_raw, "label": label, "valid_mask": valid}
    batch["tags"] = torch.zeros(b, s, k, dtype=torch.bool)
    crf = {"weight": 0.7, "sigma_rgb": 20.0, "sigma_xy": 4.0, "spacing": [3.0, 1.0, 1.0]}
    objective = build_objective({"dense_crf": {**crf, "backend": "exact"}})
    logits = torch.randn(b * s, k, h // 2, w // 2, dtype=torch.float64, requires_grad=True)
    total, terms = compute_loss(logits, batch, objective)
    total.backward()
    grad, logits.grad = logits.grad, None

    # by hand: each slice upsampled, pCE over all labelled pixels, dense CRF over [B, K, S, H, W]
    up = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
    pce = F.cross_entropy(up, label.flatten(0, 1), ignore_index=255)
    probs = up.softmax(dim=1).unflatten(0, (b, s)).transpose(1, 2)  # (B, K, S, H, W)
    volume = image_raw.transpose(1, 2)  # (B, C, S, H, W)
    dense_crf = DenseCRFLoss(**crf, backend="exact")(volume, probs, valid)
    (pce + dense_crf).backward()
    torch.testing.assert_close(total, pce + dense_crf)
    assert terms["pce"] == pytest.approx(pce.item(), rel=1e-6)
    assert terms["dense_crf"] == pytest.approx(dense_crf.item(), rel=1e-6)
    torch.testing.assert_close(grad, logits.grad)
    # the slices are coupled: not the mean of per-slice 2D losses
    flat = DenseCRFLoss(**{**crf, "spacing": None}, backend="exact")
    per_slice = flat(volume.transpose(1, 2).flatten(0, 1), probs.transpose(1, 2).flatten(0, 1))
    assert abs(per_slice.item() - dense_crf.item()) > 1e-3


def test_slab_batches_from_the_loader(mri: Path, tmp_path: Path) -> None:
    config = load_config(None, _settings(mri, tmp_path / "run", "slab_slices=3", "losses={}"))
    train_set, val_set, class_names, in_channels = build_datasets(config)
    assert isinstance(train_set, SlabDataset) and len(train_set) == 4  # 2 x ceil(5 / 3)
    assert not isinstance(val_set, SlabDataset) and len(val_set) == 5  # validation per slice
    assert in_channels == 1 and len(class_names) == 4
    loader, _, seeded = build_train_loader(train_set, config)
    seeded.set_epoch(1)
    assert train_set.epoch == 1  # EpochSeeded passes the epoch on to the slabs
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 1, 32, 32) and batch["image_raw"].shape[:3] == (2, 3, 1)
    assert batch["label"].shape == batch["valid_mask"].shape == (2, 3, 32, 32)
    assert batch["slices"].shape == (2, 3) and batch["spacing"].shape == (2, 3)
    with pytest.raises(ConfigError, match="slab_slices=6: no volume of train_split 'train' has 6"):
        build_datasets(load_config(None, _settings(mri, tmp_path, "slab_slices=6", "losses={}")))


def test_single_slices_unchanged_by_the_key(mri: Path, tmp_path: Path) -> None:
    """``slab_slices: 1`` is the per-slice training: the same weights as without the key."""
    losses = "losses={dense_crf: {weight: 1.0, sigma_rgb: 15.0, sigma_xy: 10.0}}"
    common = ["max_iterations=2", "val_split=null", "deterministic=true", losses]
    train(load_config(None, _settings(mri, tmp_path / "a", *common)))
    train(load_config(None, _settings(mri, tmp_path / "b", *common, "slab_slices=1")))
    before, after = (
        _weights(tmp_path / "a" / "checkpoint.pth"),
        _weights(tmp_path / "b" / "checkpoint.pth"),
    )
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_slab_run_resumes_exactly_mid_epoch(mri: Path, tmp_path: Path) -> None:
    # 4 slabs / batch 2 = 2 steps per epoch; the stop falls in epoch 1, resumed up to step 5
    common = ["slab_slices=3", "max_iterations=5", "val_split=null", "num_workers=2", _SPACED]
    train(load_config(None, _settings(mri, tmp_path / "reference", *common)))

    config = load_config(None, _settings(mri, tmp_path / "stopped", *common))
    run = build(config)
    prepare_output_dir(run)
    with pytest.raises(TrainingInterrupted):
        fit(run, [*default_hooks(run), InterruptAt(at=2)])
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.pth")["iteration"] == 3
    train(load_config(None, _settings(mri, tmp_path / "stopped", *common, "resume=auto")))
    final = load_checkpoint(tmp_path / "stopped" / "checkpoint.pth")
    expected = load_checkpoint(tmp_path / "reference" / "checkpoint.pth")
    assert final["iteration"] == expected["iteration"] == 5
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_slab_training_through_the_cli_resumes_and_evaluates(mri: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "slabs.yaml"
    config.write_text(
        "slab_slices: 3\nlog_every: 1\n"
        + "\n".join(
            line.replace("=", ": ", 1) for line in _settings(mri, run_dir, "max_iterations=2")
        )
    )
    spacing = (
        "losses={dense_crf: {weight: 1.0, sigma_rgb: 15.0, sigma_xy: 10.0, spacing: [5, 1, 1]}}"
    )
    assert main(["train", "--config", str(config), "--set", spacing]) == 0
    checkpoint = run_dir / "checkpoint.pth"
    assert load_checkpoint(checkpoint)["args"]["slab_slices"] == 3
    lines = [json.loads(x) for x in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    assert all(line["dense_crf"] > 0 and line["pce"] > 0 for line in lines)

    more = ["--set", spacing, "--set", "max_iterations=3", "--resume", "auto"]
    assert main(["train", "--config", str(config), *more]) == 0
    assert load_checkpoint(checkpoint)["iteration"] == 3
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val"]["volumes"] == 1 and record["val"]["pixels"] == 5 * 32 * 32

    report = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "-o", str(report)]) == 0
    assert json.loads(report.read_text())["images"] == 5  # the validation volume, per slice
