"""weakseg.engine.train with ``losses: {sec: ...}`` (Table 3): the loss, cues, runs, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.cli import main
from weakseg.data import write_synthetic_dataset
from weakseg.engine.config import ConfigError, load_config
from weakseg.engine.loaders import build_datasets
from weakseg.engine.train import compute_loss, train
from weakseg.losses import GridPottsLoss, SECLoss, cues_from_labels, sec_loss

TINY_SEC = (
    "{boundary: crf_inference, scale_factor: 0.5, theta_alpha: 4.0, n_iter: 3, backend: exact}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch() -> dict[str, torch.Tensor]:
    label = torch.full((2, 16, 16), 255)
    label[:, 1, :] = 0
    label[0, 8, 4:9] = 2
    label[1, 5:9, 10] = 1
    return {
        "label": label,
        "image_raw": torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255,
        "valid_mask": torch.ones(2, 16, 16, dtype=torch.bool),
        "tags": torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool),
    }


def test_compute_loss_sec_replaces_pce_with_labels_as_cues() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)  # upsampled to the 16x16 labels
    batch = _batch()
    module = SECLoss(boundary="dense_crf_loss", expand_weight=0.5, sigma_xy=4.0, backend="exact")
    total, terms = compute_loss(logits, batch, {"sec": module, "grid_potts": GridPottsLoss(0.1)})
    probs = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear").softmax(1)
    cues = cues_from_labels(batch["label"], 3)
    out = sec_loss(
        probs,
        batch["image_raw"],
        cues,
        batch["tags"],
        boundary="dense_crf_loss",
        expand_weight=0.5,
        sigma_xy=4.0,
        backend="exact",
    )
    grid = GridPottsLoss(0.1)(batch["image_raw"], probs, batch["valid_mask"])
    torch.testing.assert_close(total, out.loss + grid)
    assert set(terms) == {"seeding", "expansion", "boundary", "grid_potts", "loss"}  # no pce
    assert terms["expansion"] == pytest.approx(0.5 * out.expansion.item())
    parts = terms["seeding"] + terms["expansion"] + terms["boundary"] + terms["grid_potts"]
    assert terms["loss"] == pytest.approx(parts)
    total.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_compute_loss_sec_without_boundary_logs_two_terms() -> None:
    logits = torch.randn(2, 3, 16, 16)
    _, terms = compute_loss(logits, _batch(), {"sec": SECLoss(boundary="none")})
    assert set(terms) == {"seeding", "expansion", "loss"}
    assert terms["loss"] == pytest.approx(terms["seeding"] + terms["expansion"])


def test_compute_loss_rejects_two_losses_replacing_pce() -> None:
    from weakseg.proposals import DenseCRFADMLoss

    regularizers = {"sec": SECLoss(boundary="none"), "densecrf_adm": DenseCRFADMLoss()}
    with pytest.raises(ValueError, match="at most one loss that replaces partial cross-entropy"):
        compute_loss(torch.randn(2, 3, 16, 16), _batch(), regularizers)


def test_sec_training_from_scribble_cues_and_eval_of_its_checkpoint(tmp_path, tiny_config) -> None:
    record = train(tiny_config(f"losses={{sec: {TINY_SEC}}}"))
    assert record["iteration"] == 2
    assert set(record["train"]) == {"seeding", "expansion", "boundary", "loss"}
    assert all(math.isfinite(value) for value in record["train"].values())
    assert record["train"]["boundary"] > 0  # the mean-field refinement differs from S
    report = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run" / "checkpoint.pth"), "-o", str(report)]) == 0
    assert 0 <= json.loads(report.read_text())["miou"] <= 1


def _write_cues(root, ids: list[str], size: int) -> None:
    """Half-resolution cue PNGs: a background row, a class 1 or 3 cue, 255 elsewhere."""
    (root / "cues").mkdir()
    for index, sample_id in enumerate(ids):
        cue = np.full((size, size), 255, dtype=np.uint8)
        cue[0, :] = 0
        cue[size // 2, 2:5] = 1 + 2 * (index % 2)
        Image.fromarray(cue).save(root / "cues" / f"{sample_id}.png")


def test_sec_training_from_a_cue_folder(tmp_path, tiny_config) -> None:
    root = write_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, size=32)
    ids = (root / "splits" / "train.txt").read_text().split()
    _write_cues(root, ids, 16)  # stored at half resolution: resized to the 32 px images
    config = tiny_config(
        "dataset=folder",
        f"data_root={root}",
        "supervision=tags",
        f"cue_dir={root / 'cues'}",
        "scale_range=null",
        "hflip=0",
        "losses={sec: {boundary: dense_crf_loss, sigma_xy: 5.0}}",
    )
    train_set, _, _, _ = build_datasets(config)
    sample = train_set[1]
    assert sample["label"].shape == (32, 32)
    assert set(sample["label"].unique().tolist()) == {0, 3, 255}  # the cues, not the scribbles
    assert (sample["label"][:2] == 0).all()  # the cue row, nearest-upsampled to two rows
    assert sample["tags"].dtype == torch.bool and bool(sample["tags"][0])  # from the full mask
    record = train(config)
    assert set(record["train"]) == {"seeding", "expansion", "boundary", "loss"}
    assert all(math.isfinite(value) for value in record["train"].values())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["losses={sec: {boundary: crf}}"], r"losses.sec: boundary must be one of .* got 'crf'"),
        (["losses={sec: {scale_factor: 2}}"], r"losses.sec: scale_factor must be in \(0, 1\].*2"),
        (["losses={sec: {q_fg: 1.5}}"], r"losses.sec: q_fg must be in \[0, 1\].* got 1.5"),
        (["losses={sec: {seed_weight: -1}}"], r"seed_weight must be a finite number >= 0.* -1"),
        (["losses={sec: {n_iter: 2.5}}"], r"losses.sec.n_iter must be an integer, got 2.5"),
        (["losses={sec: {crf_normalization: l1}}"], r"crf_normalization must be one of .*'l1'"),
        (["losses={sec: {backprop_crf: 1}}"], r"backprop_crf must be true or false, got 1"),
        (["losses={sec: {sed_weight: 1}}"], r"unknown parameter 'sed_weight'.*'seed_weight'"),
        (["cue_dir=cues"], r"cue_dir='cues' holds localization cues .* add losses: \{sec"),
        (
            ["cue_dir=cues", "losses={sec: {}}"],
            r"cue_dir='cues'.* set supervision: tags, got supervision='scribbles'",
        ),
        (
            ["losses={sec: {}}", "supervision=full"],
            r"losses.sec needs localization cues: .* got supervision='full'",
        ),
        (
            ["losses={sec: {}, densecrf_adm: {}}"],
            "losses: sec and densecrf_adm both replace partial cross-entropy",
        ),
        (["losses={sec: {}}", "proposal_every=2"], "not on label_dir masks or proposals"),
    ],
)
def test_sec_config_errors_name_key_and_value(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
