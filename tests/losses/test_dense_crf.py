import pytest
import torch
import torch.nn.functional as F

from weakseg.filtering import PermutohedralLattice, intensity_position_features
from weakseg.losses import DenseCRFLoss, dense_crf_loss
from weakseg.losses import affinity as affinity_module

from ._reference import (
    DEVICES,
    crf_reference,
    dense_affinity,
    operator_matrix,
    random_images,
    softmax_probs,
)

NORMALIZATIONS = ["affinity", "none", "rloss"]
# Bandwidths for tiny random images: both kernel terms matter at this size.
SIGMAS = {"sigma_rgb": 60.0, "sigma_xy": 3.0}


@pytest.mark.parametrize("device", DEVICES)
def test_smoke(device):
    images = random_images(2, 3, 6, 7).float().to(device)
    probs = softmax_probs(2, 4, 6, 7).float().to(device).requires_grad_()
    loss = dense_crf_loss(images, probs, backend="exact")
    loss.backward()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.device.type == device
    assert probs.grad.shape == probs.shape and torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize(
    ("channels", "spatial", "spacing"),
    [(3, (5, 6), None), (1, (4, 7), None), (2, (3, 4, 5), (2.0, 1.0, 0.5))],
    ids=["rgb", "gray", "volume"],
)
def test_equals_brute_force(normalization, channels, spatial, spacing):
    images = random_images(2, channels, *spatial)
    probs = softmax_probs(2, 3, *spatial)
    valid = torch.rand(2, *spatial, generator=torch.Generator().manual_seed(3)) > 0.3
    w = dense_affinity(images, spacing=spacing, **SIGMAS)
    for mask in (None, valid):
        expected = crf_reference(w, probs, mask, normalization)
        actual = dense_crf_loss(
            images, probs, mask, spacing=spacing, normalization=normalization, backend="exact",
            **SIGMAS,
        )  # fmt: skip
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_rloss_is_minus_sum_swsb_over_batch():
    images, probs = random_images(3, 3, 4, 5), softmax_probs(3, 2, 4, 5)
    w = dense_affinity(images, **SIGMAS)
    s = probs.reshape(3, 2, -1)
    direct = -torch.einsum("bkp,bpq,bkq->", s, w, s) / 3
    actual = dense_crf_loss(images, probs, normalization="rloss", backend="exact", **SIGMAS)
    torch.testing.assert_close(actual, direct, rtol=1e-10, atol=0)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_gradcheck_exact(normalization):
    images = random_images(2, 3, 5, 6)
    probs = softmax_probs(2, 3, 5, 6).requires_grad_()
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[1, :, 4:] = False

    def loss(p):
        return dense_crf_loss(
            images, p, valid, normalization=normalization, backend="exact", **SIGMAS
        )

    assert torch.autograd.gradcheck(loss, (probs,), eps=1e-6, atol=1e-8)


def test_gradient_equals_autograd_of_brute_force():
    images = random_images(1, 3, 5, 5)
    probs = softmax_probs(1, 3, 5, 5)
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    valid[0, 0] = False
    mine, ref = probs.clone().requires_grad_(), probs.clone().requires_grad_()
    dense_crf_loss(images, mine, valid, backend="exact", **SIGMAS).backward()
    crf_reference(dense_affinity(images, **SIGMAS), ref, valid, "affinity").backward()
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-10, atol=1e-12)
    assert (mine.grad[0, :, 0] == 0).all()


def test_uniform_and_constant_segmentations_reach_the_documented_bounds():
    images = random_images(2, 3, 6, 6)
    uniform = torch.full((2, 4, 6, 6), 0.25, dtype=torch.float64)
    value = dense_crf_loss(images, uniform, backend="exact", **SIGMAS)
    torch.testing.assert_close(value, torch.tensor(0.75, dtype=torch.float64))
    constant = F.one_hot(torch.zeros(2, 6, 6, dtype=torch.long), 4).permute(0, 3, 1, 2).double()
    # 0 up to rounding: S'Wm - S'WS cancels exactly only in exact arithmetic
    assert abs(float(dense_crf_loss(images, constant, backend="exact", **SIGMAS))) < 1e-14


def test_scale_factor_resizes_like_the_original():
    images, probs = random_images(1, 3, 8, 10), softmax_probs(1, 2, 8, 10)
    valid = torch.ones(1, 8, 10, dtype=torch.bool)
    valid[0, :, :2] = False
    actual = dense_crf_loss(images, probs, valid, scale_factor=0.5, backend="exact", **SIGMAS)
    small_images = F.interpolate(images, scale_factor=0.5, mode="nearest")
    small_probs = F.interpolate(probs, scale_factor=0.5, mode="bilinear", align_corners=False)
    small_valid = F.interpolate(valid[:, None].double(), scale_factor=0.5)[:, 0] > 0.5
    expected = dense_crf_loss(
        small_images, small_probs, small_valid, backend="exact", sigma_rgb=60.0, sigma_xy=1.5
    )
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0)


def test_module_equals_function():
    images, probs = random_images(2, 3, 5, 6), softmax_probs(2, 3, 5, 6)
    module = DenseCRFLoss(0.5, normalization="none", backend="exact", **SIGMAS)
    expected = 0.5 * dense_crf_loss(images, probs, normalization="none", backend="exact", **SIGMAS)
    torch.testing.assert_close(module(images, probs), expected, rtol=0, atol=0)
    assert "weight=0.5" in repr(module) and "normalization='none'" in repr(module)


def test_one_filtering_for_forward_and_backward(monkeypatch):
    calls = {"build": 0, "apply": 0}
    build = affinity_module.gaussian_affinity  # the dense losses build through it

    def counting_build(*args, **kwargs):
        calls["build"] += 1
        operator = build(*args, **kwargs)

        def apply(values):
            calls["apply"] += 1
            return operator(values)

        return apply

    monkeypatch.setattr(affinity_module, "gaussian_affinity", counting_build)
    probs = softmax_probs(1, 3, 4, 4).requires_grad_()
    dense_crf_loss(random_images(1, 3, 4, 4), probs, backend="exact").backward()
    assert calls == {"build": 1, "apply": 1}


# ---- lattice backend (needs weakseg.filtering.PermutohedralLattice) ----


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_lattice_gradient_equals_autograd_through_the_same_operator(device, normalization):
    images = random_images(2, 3, 6, 7).to(device)
    probs = softmax_probs(2, 3, 6, 7).to(device)
    valid = torch.ones(2, 6, 7, dtype=torch.bool, device=device)
    valid[0, 2:4, 1:5] = False
    mine = probs.clone().requires_grad_()
    dense_crf_loss(images, mine, valid, normalization=normalization, **SIGMAS).backward()
    lattice = PermutohedralLattice(intensity_position_features(images, 60.0, 3.0))
    w = operator_matrix(lattice, 2, (6, 7), device)
    ref = probs.clone().requires_grad_()
    crf_reference(w, ref, valid, normalization).backward()
    torch.testing.assert_close(mine.grad.cpu(), ref.grad.cpu(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_value_close_to_exact(device):
    # A smooth two-region image at realistic bandwidths; 0.15 = the engine's documented accuracy.
    images = torch.zeros(1, 3, 24, 24, device=device)
    images[..., 12:] = 200
    images = images + 20 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    probs = softmax_probs(1, 3, 24, 24).float().to(device)
    for normalization in NORMALIZATIONS:
        kwargs = {"sigma_rgb": 15.0, "sigma_xy": 8.0, "normalization": normalization}
        exact = dense_crf_loss(images, probs, backend="exact", **kwargs)
        approx = dense_crf_loss(images, probs, backend="lattice", **kwargs)
        assert abs(float(approx / exact) - 1) < 0.15, (normalization, approx, exact)


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_gradient_equals_autograd_through_the_lattice_function(device):
    # The same check without a dense matrix: autograd through lattice(values), whose own
    # backward is the same filter, at a size where building W column by column would be slow.
    images = random_images(1, 3, 20, 24).to(device)
    probs = softmax_probs(1, 4, 20, 24).to(device)
    mine = probs.clone().requires_grad_()
    dense_crf_loss(images, mine, sigma_rgb=15.0, sigma_xy=10.0).backward()
    lattice = PermutohedralLattice(intensity_position_features(images, 15.0, 10.0))
    ref = probs.clone().requires_grad_()
    filtered = lattice(torch.cat([ref, torch.ones_like(ref[:, :1])], dim=1))
    ws, degree = filtered[:, :4], filtered[:, 4:]
    ((ref * (degree - ws)).sum() / degree.sum()).backward()
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("normalization", ["rloss", "rloss_original"])
def test_rloss_gradient_in_place_only_when_the_graph_is_freed(normalization):
    # The rloss backward writes its gradient into the forward's W S when nothing can read it
    # again; with retain_graph a second backward must see the same W S and give the same grad.
    images = torch.rand(2, 3, 9, 11) * 255
    logits = torch.randn(2, 4, 9, 11, requires_grad=True)
    loss = dense_crf_loss(images, logits.softmax(1), normalization=normalization, **SIGMAS)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (freed,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, freed, rtol=0, atol=0)
