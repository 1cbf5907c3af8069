import pytest
import torch
import torch.nn.functional as F

from weakseg.filtering import PermutohedralLattice, intensity_position_features
from weakseg.losses import NormalizedCutLoss, normalized_cut_loss
from weakseg.losses import affinity as affinity_module

from ._reference import (
    DEVICES,
    dense_affinity,
    nc_reference,
    operator_matrix,
    random_images,
    softmax_probs,
)

SIGMAS = {"sigma_rgb": 60.0, "sigma_xy": 3.0}


@pytest.mark.parametrize("device", DEVICES)
def test_smoke(device):
    images = random_images(2, 3, 6, 7).float().to(device)
    probs = softmax_probs(2, 4, 6, 7).float().to(device).requires_grad_()
    loss = normalized_cut_loss(images, probs, backend="exact")
    loss.backward()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.device.type == device
    assert 0 <= float(loss.detach()) <= 3 and torch.isfinite(probs.grad).all()


@pytest.mark.parametrize(
    ("channels", "spatial", "spacing"),
    [(3, (5, 6), None), (1, (4, 7), None), (2, (3, 4, 5), (2.0, 1.0, 0.5))],
    ids=["rgb", "gray", "volume"],
)
def test_equals_brute_force(channels, spatial, spacing):
    images = random_images(2, channels, *spatial)
    probs = softmax_probs(2, 3, *spatial)
    valid = torch.rand(2, *spatial, generator=torch.Generator().manual_seed(3)) > 0.3
    w = dense_affinity(images, spacing=spacing, **SIGMAS)
    for mask in (None, valid):
        expected = nc_reference(w, probs, mask)
        actual = normalized_cut_loss(
            images, probs, mask, spacing=spacing, backend="exact", **SIGMAS
        )
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_gradcheck_exact():
    images = random_images(2, 3, 5, 6)
    probs = softmax_probs(2, 3, 5, 6).requires_grad_()
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[0, 1:3, 2:5] = False

    def loss(p):
        return normalized_cut_loss(images, p, valid, backend="exact", **SIGMAS)

    assert torch.autograd.gradcheck(loss, (probs,), eps=1e-6, atol=1e-8)


def test_gradient_is_eq_12():
    # dR/dS_k = (S_k'W S_k) d / (d'S_k)^2 - 2 W S_k / d'S_k, written out with the dense W
    images, probs = random_images(1, 3, 4, 5), softmax_probs(1, 2, 4, 5)
    w = dense_affinity(images, **SIGMAS)[0]
    s = probs.reshape(2, -1)
    d = w.sum(1)
    ws = s @ w
    expected = (s * ws).sum(1, keepdim=True) * d / (s @ d)[:, None] ** 2 - 2 * ws / (s @ d)[:, None]
    probs.requires_grad_()
    normalized_cut_loss(images, probs, backend="exact", **SIGMAS).backward()
    torch.testing.assert_close(probs.grad.reshape(2, -1), expected, rtol=1e-10, atol=1e-12)


def test_bounds():
    images = random_images(1, 3, 6, 6)
    uniform = torch.full((1, 4, 6, 6), 0.25, dtype=torch.float64)
    value = normalized_cut_loss(images, uniform, backend="exact", **SIGMAS)
    torch.testing.assert_close(value, torch.tensor(3.0, dtype=torch.float64))
    # one class everywhere: no cut, and the empty classes add 0 instead of 0/0
    constant = F.one_hot(torch.zeros(1, 6, 6, dtype=torch.long), 4).permute(0, 3, 1, 2).double()
    constant.requires_grad_()
    value = normalized_cut_loss(images, constant, backend="exact", **SIGMAS)
    value.backward()
    assert abs(float(value.detach())) < 1e-14 and torch.isfinite(constant.grad).all()


def test_scale_invariant_in_w():
    # NC is a ratio: multiplying every feature distance by 0 (W = all ones) or not changes d, but
    # two far-apart hard regions have no cut either way.
    images = torch.zeros(1, 1, 4, 8, dtype=torch.float64)
    images[..., 4:] = 255
    probs = torch.zeros(1, 2, 4, 8, dtype=torch.float64)
    probs[:, 0, :, :4] = 1
    probs[:, 1, :, 4:] = 1
    value = normalized_cut_loss(images, probs, backend="exact", sigma_rgb=1.0, sigma_xy=1.0)
    assert float(value) < 1e-12


def test_module_equals_function():
    images, probs = random_images(2, 3, 5, 6), softmax_probs(2, 3, 5, 6)
    module = NormalizedCutLoss(3.0, backend="exact", **SIGMAS)
    expected = 3.0 * normalized_cut_loss(images, probs, backend="exact", **SIGMAS)
    torch.testing.assert_close(module(images, probs), expected, rtol=0, atol=0)
    assert "weight=3.0" in repr(module) and "sigma_xy=3.0" in repr(module)


def test_one_filtering_for_forward_and_backward(monkeypatch):
    calls = []
    build = affinity_module.gaussian_affinity  # the dense losses build through it

    def counting_build(*args, **kwargs):
        operator = build(*args, **kwargs)
        return lambda values: calls.append(values.shape[1]) or operator(values)

    monkeypatch.setattr(affinity_module, "gaussian_affinity", counting_build)
    probs = softmax_probs(1, 3, 4, 4).requires_grad_()
    normalized_cut_loss(random_images(1, 3, 4, 4), probs, backend="exact").backward()
    assert calls == [3 + 1]  # K classes and the degree, once


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_gradient_equals_autograd_through_the_same_operator(device):
    images = random_images(2, 3, 6, 7).to(device)
    probs = softmax_probs(2, 3, 6, 7).to(device)
    valid = torch.ones(2, 6, 7, dtype=torch.bool, device=device)
    valid[1, :, :2] = False
    mine = probs.clone().requires_grad_()
    normalized_cut_loss(images, mine, valid, **SIGMAS).backward()
    lattice = PermutohedralLattice(intensity_position_features(images, 60.0, 3.0))
    ref = probs.clone().requires_grad_()
    nc_reference(operator_matrix(lattice, 2, (6, 7), device), ref, valid).backward()
    torch.testing.assert_close(mine.grad.cpu(), ref.grad.cpu(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_value_close_to_exact(device):
    images = torch.zeros(1, 3, 24, 24, device=device)
    images[..., 12:] = 200
    images = images + 20 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    probs = softmax_probs(1, 3, 24, 24).float().to(device)
    exact = normalized_cut_loss(images, probs, backend="exact", sigma_rgb=15.0, sigma_xy=8.0)
    approx = normalized_cut_loss(images, probs, sigma_rgb=15.0, sigma_xy=8.0)
    assert abs(float(approx / exact) - 1) < 0.15, (approx, exact)
