import pytest
import torch
import torch.nn.functional as F

from weakseg.losses import GridPottsLoss, grid_potts_loss

from ._reference import DEVICES, crf_reference, grid_affinity, random_images, softmax_probs

NORMALIZATIONS = ["affinity", "none", "rloss"]


@pytest.mark.parametrize("device", DEVICES)
def test_smoke(device):
    images = random_images(2, 3, 6, 7).float().to(device)
    probs = softmax_probs(2, 4, 6, 7).float().to(device).requires_grad_()
    loss = grid_potts_loss(images, probs)
    loss.backward()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.device.type == device
    assert 0 <= float(loss.detach()) <= 1 and torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize(
    ("channels", "spatial", "connectivity", "spacing"),
    [
        (3, (4, 5), 4, None),
        (1, (4, 5), 8, (1.0, 2.0)),
        (2, (3, 3, 4), 6, (2.0, 1.0, 1.0)),
        (1, (3, 3, 4), 26, (2.0, 1.0, 0.5)),
    ],
    ids=["4", "8-spacing", "6", "26-spacing"],
)
def test_equals_brute_force(normalization, channels, spatial, connectivity, spacing):
    images = random_images(2, channels, *spatial)
    probs = softmax_probs(2, 3, *spatial)
    valid = torch.rand(2, *spatial, generator=torch.Generator().manual_seed(3)) > 0.3
    w = grid_affinity(images, 40.0, connectivity, spacing)
    for mask in (None, valid):
        expected = crf_reference(w, probs, mask, normalization)
        actual = grid_potts_loss(
            images, probs, mask, sigma_rgb=40.0, connectivity=connectivity, spacing=spacing,
            normalization=normalization,
        )  # fmt: skip
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_gradcheck(normalization):
    images = random_images(2, 3, 4, 5)
    probs = softmax_probs(2, 3, 4, 5).requires_grad_()
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    valid[1, 0] = False

    def loss(p):
        return grid_potts_loss(images, p, valid, connectivity=8, normalization=normalization)

    assert torch.autograd.gradcheck(loss, (probs,), eps=1e-6, atol=1e-8)


def test_hard_segmentation_cuts_only_the_boundary():
    # two halves, labels along the edge: with a constant image every cut edge has weight 1
    images = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    labels = torch.zeros(1, 4, 6, dtype=torch.long)
    labels[..., 3:] = 1
    probs = F.one_hot(labels, 2).permute(0, 3, 1, 2).double()
    value = grid_potts_loss(images, probs, connectivity=4, normalization="none")
    assert float(value) == 2 * 4  # 4 cut edges, each counted as (p, q) and (q, p)


def test_module_equals_function():
    images, probs = random_images(2, 3, 5, 6), softmax_probs(2, 3, 5, 6)
    module = GridPottsLoss(2.0, connectivity=8, sigma_rgb=30.0)
    expected = 2.0 * grid_potts_loss(images, probs, connectivity=8, sigma_rgb=30.0)
    torch.testing.assert_close(module(images, probs), expected, rtol=0, atol=0)
    assert "connectivity=8" in repr(module)


@pytest.mark.parametrize(
    ("shape", "connectivity", "match"),
    [((1, 2, 4, 4), 6, "4 or 8 for 2D"), ((1, 2, 3, 4, 4), 8, "6 or 26 for 3D")],
)
def test_bad_connectivity(shape, connectivity, match):
    probs = torch.full(shape, 0.5)
    images = torch.zeros(shape[0], 1, *shape[2:])
    with pytest.raises(ValueError, match=match):
        grid_potts_loss(images, probs, connectivity=connectivity)


def test_module_rejects_unknown_connectivity():
    with pytest.raises(ValueError, match="connectivity must be None, 4, 8, 6 or 26, got 5"):
        GridPottsLoss(connectivity=5)


def test_bad_spacing():
    with pytest.raises(ValueError, match="one value per spatial axis"):
        grid_potts_loss(torch.zeros(1, 1, 4, 4), torch.full((1, 2, 4, 4), 0.5), spacing=(1.0,))
