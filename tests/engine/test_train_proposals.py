"""weakseg.engine.train: the proposal training modes of Table 2 (DenseCRF-ADM, GrabCut one time,
iterative proposals) and the unweighted dense CRF value that GD and ADM runs both log."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weakseg.data.io import write_label
from weakseg.engine import train as train_module
from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.config import TrainConfig, load_config
from weakseg.engine.loaders import build_datasets
from weakseg.engine.train import TrainingInterrupted, compute_loss, train
from weakseg.losses import DenseCRFLoss, dense_crf_loss, partial_cross_entropy
from weakseg.proposals import DenseCRFADMLoss, densecrf_adm_loss, proposals_complete

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    label = torch.full((2, 12, 12), 255)
    label[:, 2:5, 3] = 1
    label[:, 8, 2:9] = 0
    valid = torch.ones(2, 12, 12, dtype=torch.bool)
    valid[1, :, 10:] = False  # padding
    label[1, :, 10:] = 255
    batch = {"label": label, "image_raw": torch.rand(2, 3, 12, 12, generator=g) * 255}
    batch["valid_mask"] = valid
    return logits, batch


def _full(logits: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, size=(12, 12), mode="bilinear", align_corners=False)


CRF = {"sigma_rgb": 30.0, "sigma_xy": 4.0, "backend": "exact"}


def test_compute_loss_adm_replaces_pce_and_logs_the_dense_crf_value() -> None:
    logits, batch = _batch()
    adm = DenseCRFADMLoss(n_iter=3, theta_alpha=4.0, theta_beta=30.0, theta_gamma=2.0, **CRF)
    total, terms = compute_loss(logits, batch, {"densecrf_adm": adm})
    full = _full(logits)
    out = densecrf_adm_loss(
        full,
        batch["image_raw"],
        batch["label"],
        valid_mask=batch["valid_mask"],
        n_iter=3,
        theta_alpha=4.0,
        theta_beta=30.0,
        theta_gamma=2.0,
        **CRF,
    )
    torch.testing.assert_close(total, out.loss)
    pce = partial_cross_entropy(full, batch["label"])
    assert list(terms) == ["pce", "densecrf_adm", "dense_crf_value", "loss"]
    assert terms["pce"] == pytest.approx(pce.item())
    assert terms["densecrf_adm"] == pytest.approx((out.loss - pce).item(), rel=1e-5)
    assert terms["densecrf_adm"] > 0.1 and terms["loss"] > terms["pce"]  # not the pCE alone
    reference = dense_crf_loss(batch["image_raw"], full.softmax(1), batch["valid_mask"], **CRF)
    assert terms["dense_crf_value"] == pytest.approx(reference.item(), rel=1e-5)
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("normalization", "scale_factor", "weight"),
    [("affinity", 1.0, 0.25), ("rloss", 1.0, 1e-3), ("affinity", 0.5, 2.0), ("affinity", 1.0, 0.0)],
)
def test_dense_crf_value_is_the_unweighted_value_adm_logs(normalization, scale_factor, weight):
    logits, batch = _batch(1)
    module = DenseCRFLoss(
        weight=weight, normalization=normalization, scale_factor=scale_factor, **CRF
    )
    _, terms = compute_loss(logits, batch, {"dense_crf": module})
    full = _full(logits)
    weighted = module(batch["image_raw"], full.softmax(1), batch["valid_mask"])
    assert terms["dense_crf"] == pytest.approx(weighted.item(), rel=1e-5, abs=1e-7)
    assert terms["loss"] == pytest.approx(terms["pce"] + terms["dense_crf"], rel=1e-5)
    if normalization != "affinity" or scale_factor != 1.0 or weight == 0.0:
        # not derivable from the training term: not logged rather than filtered again
        assert "dense_crf_value" not in terms
        return
    # The same quantity, same normalization as DenseCRF-ADM's R(S) for the same network output.
    adm = DenseCRFADMLoss(n_iter=1, **CRF)
    _, adm_terms = compute_loss(logits, batch, {"densecrf_adm": adm})
    assert terms["dense_crf_value"] == pytest.approx(adm_terms["dense_crf_value"], rel=1e-5)
    reference = dense_crf_loss(batch["image_raw"], full.softmax(1), batch["valid_mask"], **CRF)
    assert terms["dense_crf_value"] == pytest.approx(reference.item(), rel=1e-5)


def _tiny(tmp_path, name: str, *extra: str) -> TrainConfig:
    return load_config(
        None,
        [
            f"output_dir={tmp_path / name}",
            "synthetic_train=4",
            "synthetic_val=2",
            "synthetic_size=32",
            "crop_size=32",
            "batch_size=2",
            "num_workers=0",
            "progress=false",
            "tensorboard=false",
            *extra,
        ],
    )


def test_train_densecrf_adm_logs_dense_crf_value_and_differs_from_pce(tmp_path) -> None:
    adm = train(_tiny(tmp_path, "adm", "max_iterations=1", "losses={densecrf_adm: {sigma_xy: 10}}"))
    pce = train(_tiny(tmp_path, "pce", "max_iterations=1", "losses={}"))
    terms = adm["train"]
    assert set(terms) == {"pce", "densecrf_adm", "dense_crf_value", "loss"}
    assert 0.0 < terms["dense_crf_value"] < 1 - 1 / 4  # R(S) / 1'W1 of a soft segmentation
    # same weights and batch at the first step: same pCE, but ADM adds the proposal CE
    assert terms["pce"] == pytest.approx(pce["train"]["pce"], rel=1e-5)
    assert terms["loss"] == pytest.approx(terms["pce"] + terms["densecrf_adm"], rel=1e-5)
    assert terms["densecrf_adm"] > 0.1


def test_train_on_a_label_folder_uses_its_masks(tmp_path) -> None:
    known, other = tmp_path / "known", tmp_path / "other"
    pattern = np.zeros((32, 32), dtype=np.uint8)
    pattern[:, :8] = 2  # a left band of class 2, so that a flip shows
    for i in range(4):
        write_label(known / f"synthetic_{i:05d}.png", pattern)
        write_label(other / f"synthetic_{i:05d}.png", np.full((32, 32), 1, dtype=np.uint8))
    flip = ("supervision=full", "scale_range=null", "hflip=1.0", "max_iterations=1")
    config = _tiny(tmp_path, "known", f"label_dir={known}", *flip)
    train_set, _, _, _ = build_datasets(config)
    # the folder's mask replaced the label before the transform: flipped with the image
    torch.testing.assert_close(train_set[0]["label"], torch.from_numpy(pattern).long().flip(-1))
    assert (train_set[0]["mask"] != train_set[0]["label"]).any()  # not the dataset's masks
    losses = {
        "known": train(config)["train"]["pce"],
        "other": train(_tiny(tmp_path, "other", f"label_dir={other}", *flip))["train"]["pce"],
        "masks": train(_tiny(tmp_path, "masks", *flip))["train"]["pce"],
    }
    assert len({round(v, 6) for v in losses.values()}) == 3, losses


def _stop_after(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    """Make the stop flag report SIGTERM after ``iteration`` optimizer steps."""
    calls = {"n": 0}

    def requested(self, distributed, device):
        calls["n"] += 1
        return 15 if calls["n"] == iteration else None

    monkeypatch.setattr(train_module._StopFlag, "requested", requested)


def _spy_generation(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    original = train_module.write_network_proposals

    def spy(model, dataset, folder, *args, **kwargs):
        made.append(folder.name)
        return original(model, dataset, folder, *args, **kwargs)

    monkeypatch.setattr(train_module, "write_network_proposals", spy)
    return made


ITERATIVE = ("epochs=3", "proposal_every=1", "proposal_crf={n_iter: 2}", "val_split=null")


@pytest.mark.parametrize("stop", [4, 5], ids=["at-round-start", "mid-round"])
def test_iterative_proposals_per_round_and_exact_resume(tmp_path, monkeypatch, stop) -> None:
    # 2 steps per epoch; rounds: scribbles in epoch 0, proposals from epochs 1 and 2
    with monkeypatch.context() as patch:
        made = _spy_generation(patch)
        reference = train(_tiny(tmp_path, "full", *ITERATIVE))
    assert made == ["epoch_1", "epoch_2"] and reference["iteration"] == 6
    folder = tmp_path / "full" / "proposals"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_1", "epoch_2"]
    assert proposals_complete(folder / "epoch_2")
    assert len(list((folder / "epoch_2").glob("*.png"))) == 4

    with monkeypatch.context() as patch:
        made = _spy_generation(patch)
        _stop_after(patch, stop)
        with pytest.raises(TrainingInterrupted):
            train(_tiny(tmp_path, "cut", *ITERATIVE))
    # stop 4 = end of epoch 1, before epoch 2's proposals; stop 5 = inside epoch 2
    assert made == (["epoch_1"] if stop == 4 else ["epoch_1", "epoch_2"])
    with monkeypatch.context() as patch:
        made = _spy_generation(patch)
        resumed = train(_tiny(tmp_path, "cut", *ITERATIVE, "resume=auto"))
    # resumed at a round start: made from the same weights; mid-round: the folder is reused
    assert made == (["epoch_2"] if stop == 4 else [])
    assert resumed["iteration"] == 6
    expected = load_checkpoint(tmp_path / "full" / "checkpoint.pth")["model"]
    got = load_checkpoint(tmp_path / "cut" / "checkpoint.pth")["model"]
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_resume_mid_round_without_its_proposals_is_an_error(tmp_path, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        _stop_after(patch, 3)  # inside epoch 1, the first proposal round
        with pytest.raises(TrainingInterrupted):
            train(_tiny(tmp_path, "cut", *ITERATIVE))
    (tmp_path / "cut" / "proposals" / "epoch_1" / "proposals.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"cannot resume exactly.*epoch 1.*proposals.json"):
        train(_tiny(tmp_path, "cut", *ITERATIVE, "resume=auto"))


def test_iterative_rounds_train_on_the_proposals(tmp_path, monkeypatch) -> None:
    def fake(model, dataset, folder, *args, **kwargs):  # every proposal says class 3
        for i in range(len(dataset)):
            write_label(folder / f"{dataset[i]['id']}.png", np.full((32, 32), 3, dtype=np.uint8))

    seen: list[set[int]] = []
    original = train_module.compute_loss

    def spy(logits, batch, regularizers):
        seen.append(set(batch["label"].unique().tolist()))
        return original(logits, batch, regularizers)

    monkeypatch.setattr(train_module, "write_network_proposals", fake)
    monkeypatch.setattr(train_module, "compute_loss", spy)
    train(
        _tiny(tmp_path, "run", "epochs=2", "proposal_every=1", "scale_range=null", "val_split=null")
    )
    assert len(seen) == 4  # 2 steps per epoch
    assert all(255 in labels for labels in seen[:2])  # epoch 0: scribbles
    assert seen[2:] == [{3}, {3}]  # epoch 1: the proposals, every pixel labeled
