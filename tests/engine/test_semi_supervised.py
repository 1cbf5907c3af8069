"""Semi-supervised training from one split (``labeled_fraction``): which images keep their labels,
the config checks, the training set, and the loss of images without any labeled pixel."""

from __future__ import annotations

import pytest
import torch

from weakseg.data import LabelFolderDataset
from weakseg.engine.config import ConfigError, load_config
from weakseg.engine.loaders import (
    PartiallyLabeled,
    build_datasets,
    label_folder,
    labeled_indices,
)
from weakseg.engine.train import compute_loss, train
from weakseg.losses import DenseCRFLoss
from weakseg.proposals import DenseCRFADMLoss


def test_labeled_indices_are_seeded_sized_and_nested() -> None:
    half = labeled_indices(200, 0.5, seed=3)
    assert half == labeled_indices(200, 0.5, seed=3)  # deterministic
    assert len(half) == 100 and half == sorted(set(half)) and 0 <= half[0] and half[-1] < 200
    quarter = labeled_indices(200, 0.25, seed=3)
    assert len(quarter) == 50 and set(quarter) <= set(half)  # a smaller fraction is a subset
    assert labeled_indices(200, 0.5, seed=4) != half
    assert labeled_indices(7, 1.0) == list(range(7))
    assert len(labeled_indices(5, 0.5)) == 3  # 2.5 rounds up
    assert len(labeled_indices(10, 0.01)) == 1  # never none
    # not the sampler's epoch-0 order of the same seed (randperm), which would put the labeled
    # images first in the first epoch
    order = torch.randperm(200, generator=torch.Generator().manual_seed(3)).tolist()
    assert half != sorted(order[:100])


@pytest.mark.parametrize(
    ("size", "fraction", "message"),
    [(10, 0.0, r"fraction must be in \(0, 1\], got 0.0"), (0, 0.5, "size must be >= 1, got 0")],
)
def test_labeled_indices_errors(size, fraction, message) -> None:
    with pytest.raises(ValueError, match=message):
        labeled_indices(size, fraction)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["labeled_fraction=0"], r"labeled_fraction is the share .* in \(0, 1\]; got 0.0"),
        (["labeled_fraction=1.5"], r"in \(0, 1\]; got 1.5 \(defaults \+ --set\)"),
        (["labeled_fraction=half"], r"'labeled_fraction' must be a number"),
        (
            ["labeled_fraction=0.5", "supervision=tags"],
            r"supervision='tags' has no pixel labels; use scribbles, clicks or full",
        ),
    ],
)
def test_labeled_fraction_config_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_training_set_keeps_the_labels_of_the_chosen_images(tiny_config) -> None:
    # 8 images, every scribble inside the crop (no rescaling)
    settings = ("synthetic_train=8", "scale_range=null", "seed=1")
    train_set, _, names, _ = build_datasets(tiny_config(*settings, "labeled_fraction=0.25"))
    assert isinstance(train_set, PartiallyLabeled) and train_set.class_names == names
    assert len(train_set) == 8 and train_set.labeled == frozenset(labeled_indices(8, 0.25, 1))
    everything, _, _, _ = build_datasets(tiny_config(*settings))
    for index in range(8):
        torch.manual_seed(index)
        sample = train_set[index]
        torch.manual_seed(index)
        original = everything[index]  # the same sample with its scribbles
        assert torch.equal(sample["image"], original["image"])
        assert torch.equal(sample["mask"], original["mask"])
        assert (original["label"] != 255).any()
        if index in train_set.labeled:
            assert torch.equal(sample["label"], original["label"])
        else:
            assert (sample["label"] == 255).all()
    # a fraction of 1 leaves the training set as it is
    assert not isinstance(everything, PartiallyLabeled)


def test_iterative_proposals_find_their_folder_dataset(tiny_config) -> None:
    train_set, _, _, _ = build_datasets(tiny_config("labeled_fraction=0.5", "proposal_every=1"))
    assert isinstance(label_folder(train_set), LabelFolderDataset)


def _batch(labeled_first: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    label = torch.full((2, 12, 12), 255)
    if labeled_first:
        label[0, 2:6, 3] = 1
        label[0, 8, 4:9] = 0
    return {
        "label": label,
        "image_raw": torch.rand(2, 3, 12, 12, generator=generator) * 255,
        "valid_mask": torch.ones(2, 12, 12, dtype=torch.bool),
    }


def test_images_without_labels_get_gradients_from_the_regularizer_only() -> None:
    torch.manual_seed(0)
    regularizer = DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=5.0)
    # a batch of unlabeled images: pCE is exactly 0, the loss and gradients finite
    logits = torch.randn(2, 3, 12, 12, requires_grad=True)
    total, terms = compute_loss(logits, _batch(labeled_first=False), {"dense_crf": regularizer})
    assert terms["pce"] == 0.0 and terms["loss"] == pytest.approx(terms["dense_crf"])
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # without a regularizer such a batch gives a zero loss and zero gradients, not NaN
    plain = torch.randn(2, 3, 12, 12, requires_grad=True)
    total, terms = compute_loss(plain, _batch(labeled_first=False), {})
    total.backward()
    assert terms["loss"] == 0.0 and torch.equal(plain.grad, torch.zeros_like(plain))

    # a mixed batch: on the unlabeled image the gradient is the regularizer's alone
    mixed = torch.randn(2, 3, 12, 12, requires_grad=True)
    batch = _batch(labeled_first=True)
    total, terms = compute_loss(mixed, batch, {"dense_crf": regularizer})
    assert terms["pce"] > 0
    total.backward()
    alone = mixed.detach().clone().requires_grad_(True)
    regularizer(batch["image_raw"], alone.softmax(1), batch["valid_mask"]).backward()
    torch.testing.assert_close(mixed.grad[1], alone.grad[1])
    assert not torch.allclose(mixed.grad[0], alone.grad[0])  # pCE acts on the labeled one


def test_adm_on_unlabeled_images_is_finite() -> None:
    logits = torch.randn(2, 3, 12, 12, requires_grad=True)
    adm = DenseCRFADMLoss(n_iter=2, theta_alpha=5.0, sigma_xy=5.0)
    total, terms = compute_loss(logits, _batch(labeled_first=False), {"densecrf_adm": adm})
    total.backward()
    assert terms["pce"] == 0.0 and all(map(torch.isfinite, (total, logits.grad.sum())))


def test_training_with_a_quarter_of_the_images_labeled(tiny_config) -> None:
    # 4 images, 1 labeled (0.25 * 4): one of the epoch's 2 batches has no labeled pixel
    losses = "losses={dense_crf: {weight: 1.0, sigma_xy: 10.0}}"
    record = train(tiny_config("labeled_fraction=0.25", "epochs=1", losses))
    assert record["iteration"] == 2
    assert set(record["train"]) >= {"pce", "dense_crf", "loss"}
    assert all(map(torch.isfinite, torch.tensor(list(record["train"].values()))))
