import pytest
import torch
import torch.nn.functional as F

from weakseg.losses import PartialCrossEntropy, partial_cross_entropy

from ._reference import DEVICES


def _scribbles(shape, fraction, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) > fraction] = 255
    return labels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)], ids=["2d", "3d"])
def test_equals_cross_entropy_with_ignore_index(device, spatial):
    logits = torch.randn(2, 3, *spatial, device=device)
    labels = _scribbles((2, *spatial), 0.3).to(device)
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(partial_cross_entropy(logits, labels), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_no_labeled_pixel_gives_zero_and_zero_gradient(device):
    logits = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((2, 4, 4), 255, device=device))
    loss.backward()
    assert float(loss.detach()) == 0 and (logits.grad == 0).all()


def test_custom_ignore_index_and_uint8_labels():
    logits = torch.randn(1, 3, 4, 4)
    labels = _scribbles((1, 4, 4), 0.5)
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(partial_cross_entropy(logits, labels.to(torch.uint8)), expected)
    labels[labels == 255] = -1
    torch.testing.assert_close(partial_cross_entropy(logits, labels, ignore_index=-1), expected)


def test_gradcheck():
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    labels = _scribbles((2, 3, 4), 0.5)
    assert torch.autograd.gradcheck(lambda x: partial_cross_entropy(x, labels), (logits,))


def test_module_equals_function():
    logits, labels = torch.randn(2, 3, 4, 4), _scribbles((2, 4, 4), 0.5)
    module = PartialCrossEntropy(ignore_index=255)
    assert module(logits, labels) == partial_cross_entropy(logits, labels)
    assert repr(module) == "PartialCrossEntropy(ignore_index=255, class_balanced=False)"
    balanced = PartialCrossEntropy(class_balanced=True)
    assert balanced(logits, labels) == partial_cross_entropy(logits, labels, class_balanced=True)
    with pytest.raises(TypeError, match="class_balanced must be True or False, got 1"):
        PartialCrossEntropy(class_balanced=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)], ids=["2d", "3d"])
def test_class_balanced_is_cross_entropy_with_inverse_count_weights(device, spatial):
    """Each present class weighs the same: ``F.cross_entropy`` with weights 1 / (labeled pixels
    of the class), an absent class (here 2) weighing nothing; by hand on a 1-D case."""
    logits = torch.randn(2, 4, *spatial, dtype=torch.float64, device=device)
    labels = _scribbles((2, *spatial), 0.6).to(device)
    labels[labels == 2] = 3
    counts = torch.bincount(labels[labels != 255], minlength=4).double()
    weight = torch.where(counts > 0, 1 / counts.clamp_min(1), 0.0)
    expected = F.cross_entropy(logits, labels, weight=weight, ignore_index=255)
    actual = partial_cross_entropy(logits, labels, class_balanced=True)
    torch.testing.assert_close(actual, expected)
    # two pixels of class 0 with CE a, b and one of class 1 with CE c: ((a + b) / 2 + c) / 2
    line = torch.tensor([[[0.0, 1.0, 2.0]], [[0.5, 0.0, -1.0]]], dtype=torch.float64)[None]
    ce = -line[0, :, 0].log_softmax(0)  # (2, 3): CE of class k at pixel p
    by_hand = ((ce[0, 0] + ce[0, 1]) / 2 + ce[1, 2]) / 2
    target = torch.tensor([[[0, 0, 1]]])
    torch.testing.assert_close(partial_cross_entropy(line, target, class_balanced=True), by_hand)
    empty = torch.full((2, *spatial), 255, device=device)
    assert float(partial_cross_entropy(logits, empty, class_balanced=True)) == 0.0
    grad_input = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: partial_cross_entropy(x, labels, class_balanced=True), (grad_input,)
    )


@pytest.mark.parametrize(
    ("logits", "labels", "error", "match"),
    [
        ([1.0], torch.zeros(1, 4, 4, dtype=torch.long), TypeError, "logits must be a torch.Tensor"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 4), ValueError, r"logits must have shape \[B, K"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4), TypeError, "floating"),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), TypeError, "labels must be an integer"),
        (
            torch.zeros(1, 3, 4, 4),
            torch.zeros(1, 4, 5, dtype=torch.long),
            ValueError,
            r"labels must have shape \[B, \*spatial\] = \(1, 4, 4\)",
        ),
        (
            torch.zeros(1, 3, 4, 4),
            torch.full((1, 4, 4), 3, dtype=torch.long),
            ValueError,
            r"class ids in 0..2 or ignore_index=255, got \[3\]",
        ),
    ],
)
def test_bad_input(logits, labels, error, match):
    with pytest.raises(error, match=match):
        partial_cross_entropy(logits, labels)
