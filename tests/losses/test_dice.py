"""The soft Dice loss against a per-class loop over the labeled pixels, its edge cases and its
place in the objective."""

from __future__ import annotations

import pytest
import torch

from weakseg.losses import DiceLoss, build_objective, dice_loss

from ._reference import DEVICES


def _reference(probs, labels, include_background, smooth, ignore_index=255):
    """1 - mean_k D_k with the sums written out pixel by pixel (float64)."""
    probs, labels = probs.double(), labels.long()
    num_classes = probs.shape[1]
    scores = []
    for k in range(0 if include_background else 1, num_classes):
        overlap = size = 0.0
        for b in range(labels.shape[0]):
            for index in torch.nonzero(labels[b] != ignore_index).tolist():
                p = float(probs[(b, k, *index)])
                t = float(labels[(b, *index)] == k)
                overlap += p * t
                size += p + t
        scores.append((2 * overlap + smooth) / (size + smooth))
    return 1 - sum(scores) / len(scores)


def _inputs(shape, classes=3, fraction=0.4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.randn(shape[0], classes, *shape[1:], generator=generator).softmax(1)
    labels = torch.randint(0, classes, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) > fraction] = 255
    return probs, labels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize("include_background", [False, True])
def test_matches_the_pixel_loop(device, spatial, include_background):
    probs, labels = _inputs((2, *spatial))
    value = dice_loss(probs.to(device), labels.to(device), include_background=include_background)
    expected = _reference(probs, labels, include_background, 1e-5)
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_unlabeled_pixels_do_not_count():
    probs, labels = _inputs((2, 6, 6))
    other = probs.clone()
    unlabeled = (labels == 255).unsqueeze(1).expand_as(probs)
    other[unlabeled] = torch.rand(int(unlabeled.sum()))
    assert float(dice_loss(other, labels)) == pytest.approx(float(dice_loss(probs, labels)))


def test_gradient_matches_finite_differences():
    probs, labels = _inputs((1, 4, 4), fraction=0.7)
    probs = probs.double().requires_grad_()
    torch.autograd.gradcheck(lambda p: dice_loss(p, labels, include_background=True), (probs,))


def test_perfect_and_opposite_predictions():
    labels = torch.tensor([[[0, 1, 2], [2, 1, 255]]])
    one_hot = torch.nn.functional.one_hot(labels.clamp_max(2), 3).permute(0, 3, 1, 2).float()
    assert float(dice_loss(one_hot, labels, include_background=True)) == pytest.approx(0, abs=1e-6)
    wrong = one_hot.roll(1, dims=1)  # every labeled pixel predicts another class
    assert float(dice_loss(wrong, labels)) == pytest.approx(1, abs=1e-5)


def test_no_labeled_pixel_gives_zero_and_zero_gradient():
    probs = torch.rand(2, 3, 4, 4, requires_grad=True)
    loss = dice_loss(probs, torch.full((2, 4, 4), 255))
    loss.backward()
    assert float(loss.detach()) == 0 and (probs.grad == 0).all()


def test_predicted_but_unlabeled_class_is_pushed_down():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # only the background is labeled
    probs = torch.full((1, 2, 4, 4), 0.5, requires_grad=True)
    dice_loss(probs, labels).backward()  # class 1: D = eps / (8 + eps), its gradient > 0
    assert (probs.grad[:, 1] > 0).all()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: dice_loss(torch.rand(1, 2, 4), torch.zeros(1, 4)), ValueError, "probs must have"),
        (
            lambda: dice_loss(torch.rand(1, 2, 4, 4), torch.full((1, 4, 4), 5)),
            ValueError,
            "labels",
        ),
        (
            lambda: dice_loss(torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)),
            ValueError,
            "2 classes",
        ),
        (
            lambda: dice_loss(
                torch.rand(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), smooth=0
            ),
            ValueError,
            "smooth",
        ),
        (lambda: DiceLoss(include_background=1), TypeError, "include_background must be true"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_objective_adds_dice_to_cross_entropy():
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    objective = build_objective({"dice": {"weight": 0.5, "include_background": True}})
    total, logged = objective(logits, {"label": labels})
    expected_dice = 0.5 * dice_loss(logits.softmax(1), labels, include_background=True)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(logged["dice"], expected_dice)
    torch.testing.assert_close(total, ce + expected_dice)
