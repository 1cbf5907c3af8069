"""weakseg.engine.train: the loss, the LR schedule, the optimizer groups, training on data."""

from __future__ import annotations

import json

import pytest
import torch

from weakseg.engine.config import ConfigError, TrainConfig, load_config
from weakseg.engine.train import build_optimizer, compute_loss, poly_lr_lambda, train
from weakseg.errors import MissingFileError
from weakseg.losses import GridPottsLoss, partial_cross_entropy
from weakseg.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_poly_lr_with_warmup() -> None:
    factor = poly_lr_lambda(100, power=0.9, warmup_iterations=10, warmup_factor=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5**0.9)
    assert factor(100) == 0.0
    assert poly_lr_lambda(10)(5) == pytest.approx(0.5**0.9)


def test_compute_loss_upsamples_and_sums_terms() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    label = torch.full((2, 16, 16), 255)
    label[:, 2:5, 3] = 1
    batch = {
        "label": label,
        "image_raw": torch.rand(2, 3, 16, 16) * 255,
        "valid_mask": torch.ones(2, 16, 16, dtype=torch.bool),
    }
    regularizer = GridPottsLoss(weight=0.5)
    total, terms = compute_loss(logits, batch, {"grid_potts": regularizer})
    full = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear")
    pce = partial_cross_entropy(full, label)
    expected = pce + regularizer(batch["image_raw"], full.softmax(1), batch["valid_mask"])
    torch.testing.assert_close(total, expected)
    assert terms["pce"] == pytest.approx(pce.item())
    assert terms["loss"] == pytest.approx(terms["pce"] + terms["grid_potts"])
    total.backward()
    assert logits.grad is not None


def test_optimizer_groups_head_lr() -> None:
    model = build_model("lraspp_mobilenet_v3", 2)
    config = TrainConfig(lr=0.01, head_lr_mult=10.0, optimizer="adamw")
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.1]
    count = sum(len(g["params"]) for g in optimizer.param_groups)
    assert count == len(list(model.parameters()))


def _tiny(tmp_path, *extra: str) -> TrainConfig:
    return load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
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


def test_train_synthetic_with_accumulation(tmp_path) -> None:
    config = _tiny(tmp_path, "accumulate=2", "epochs=2", "losses={grid_potts: {weight: 0.1}}")
    record = train(config)
    assert record["epoch"] == 1 and record["iteration"] == 2  # 2 batches per step, 1 step/epoch
    assert set(record["train"]) == {"pce", "grid_potts", "loss"}
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert "miou" in json.loads(lines[-1])["val"]
    assert {"checkpoint.pth", "best.pth", "config.yaml"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }


def test_train_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"batch_size=8 is larger than the 4 training samples"):
        train(_tiny(tmp_path, "batch_size=8"))
    with pytest.raises(ConfigError, match=r"fewer than accumulate=3"):
        train(_tiny(tmp_path, "accumulate=3"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nothing.pth"):
        train(_tiny(tmp_path, f"resume={tmp_path / 'nothing.pth'}"))


def test_semi_supervised_mix_of_labeled_and_unlabeled(tmp_path) -> None:
    from weakseg.data import write_synthetic_dataset
    from weakseg.engine.loaders import build_datasets

    root = write_synthetic_dataset(tmp_path / "data", n_train=3, n_val=2, size=32)
    config = _tiny(
        tmp_path,
        "dataset=folder",
        f"data_root={root}",
        "supervision=full",
        "unlabeled_split=val",
        "losses={normalized_cut: {weight: 0.1}}",  # Table 5 / section 4.5
    )
    train_set, val_set, names, channels = build_datasets(config)
    assert len(train_set) == 5 and len(val_set) == 2 and channels == 3 and len(names) == 4
    assert all((train_set[i]["label"] != 255).any() for i in range(3))  # full masks
    assert all((train_set[i]["label"] == 255).all() for i in range(3, 5))  # regularizer only
    config.max_iterations = 1
    assert train(config)["iteration"] == 1


def test_losses_jsonl_every_log_every_steps_appended_on_resume(tmp_path) -> None:
    losses = "losses={grid_potts: {weight: 0.1}}"
    record = train(_tiny(tmp_path, "epochs=1", "log_every=1", losses))  # 2 steps of 2 images
    path = tmp_path / "run" / "losses.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    assert [line["epoch"] for line in lines] == [0, 0]
    assert all(
        set(line) == {"iteration", "epoch", "lr", "pce", "grid_potts", "loss"} for line in lines
    )
    for line in lines:
        assert line["loss"] == pytest.approx(line["pce"] + line["grid_potts"])
    # the epoch's record in metrics.jsonl is the mean of its steps, all logged here
    assert record["train"]["pce"] == pytest.approx((lines[0]["pce"] + lines[1]["pce"]) / 2)
    assert lines[0]["lr"] > lines[1]["lr"] == record["lr"]  # poly decay, after the step

    train(_tiny(tmp_path, "epochs=2", "log_every=2", "resume=auto", losses))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["iteration"], line["epoch"]) for line in lines] == [(1, 0), (2, 0), (4, 1)]


def test_resume_takes_the_weights_from_the_checkpoint_not_the_pretrained_file(tmp_path) -> None:
    train(_tiny(tmp_path / "phase1", "max_iterations=1"))
    pretrained = tmp_path / "phase1.pth"
    (tmp_path / "phase1" / "run" / "checkpoint.pth").rename(pretrained)
    phase2 = (f"pretrained={pretrained}", "resume=auto")
    assert train(_tiny(tmp_path / "phase2", "max_iterations=1", *phase2))["iteration"] == 1
    pretrained.unlink()  # gone before the resume: the resume does not need it
    assert train(_tiny(tmp_path / "phase2", "max_iterations=2", *phase2))["iteration"] == 2
    # a fresh run still needs it, and names it
    with pytest.raises(MissingFileError, match=r"pretrained weights file not found: .*phase1"):
        train(_tiny(tmp_path / "phase3", "max_iterations=1", *phase2))
