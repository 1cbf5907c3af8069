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
    assert repr(module) == "PartialCrossEntropy(ignore_index=255)"


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
