import pytest
import torch

from weakseg.filtering import PermutohedralLattice, intensity_position_features
from weakseg.losses import KernelCutLoss, dense_crf_loss, kernel_cut_loss, normalized_cut_loss
from weakseg.losses import affinity as affinity_module
from weakseg.losses import kernel_cut as kernel_cut_module

from ._reference import (
    DEVICES,
    crf_reference,
    dense_affinity,
    nc_reference,
    operator_matrix,
    random_images,
    softmax_probs,
)

NORMALIZATIONS = ["affinity", "none", "rloss"]
CRF = {"sigma_rgb": 60.0, "sigma_xy": 3.0}
NC = {"nc_sigma_rgb": 40.0, "nc_sigma_xy": 2.0}


@pytest.mark.parametrize("device", DEVICES)
def test_smoke(device):
    images = random_images(2, 3, 6, 7).float().to(device)
    probs = softmax_probs(2, 4, 6, 7).float().to(device).requires_grad_()
    loss = kernel_cut_loss(images, probs, gamma=0.5, backend="exact")
    loss.backward()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.device.type == device
    assert torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize(
    ("channels", "spatial", "spacing"),
    [(3, (5, 6), None), (1, (3, 4, 5), (2.0, 1.0, 0.5))],
    ids=["rgb", "volume"],
)
def test_equals_brute_force(normalization, channels, spatial, spacing):
    images = random_images(2, channels, *spatial)
    probs = softmax_probs(2, 3, *spatial)
    valid = torch.rand(2, *spatial, generator=torch.Generator().manual_seed(3)) > 0.3
    w = dense_affinity(images, spacing=spacing, **CRF)
    w_nc = dense_affinity(images, 40.0, 2.0, spacing=spacing)
    expected = crf_reference(w, probs, valid, normalization) + 0.7 * nc_reference(
        w_nc, probs, valid
    )
    actual = kernel_cut_loss(
        images, probs, valid, gamma=0.7, spacing=spacing, normalization=normalization,
        backend="exact", **CRF, **NC,
    )  # fmt: skip
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_is_crf_plus_gamma_nc_with_shared_bandwidths():
    images, probs = random_images(2, 3, 5, 6), softmax_probs(2, 3, 5, 6)
    crf = dense_crf_loss(images, probs, backend="exact", **CRF)
    nc = normalized_cut_loss(images, probs, backend="exact", **CRF)
    actual = kernel_cut_loss(images, probs, gamma=2.0, backend="exact", **CRF)
    torch.testing.assert_close(actual, crf + 2.0 * nc, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_gradcheck_exact(shared, normalization):
    images = random_images(2, 3, 5, 6)
    probs = softmax_probs(2, 3, 5, 6).requires_grad_()
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[0, 1:3, 2:5] = False
    bandwidths = {**CRF} if shared else {**CRF, **NC}

    def loss(p):
        return kernel_cut_loss(
            images, p, valid, gamma=0.5, normalization=normalization, backend="exact",
            **bandwidths,
        )  # fmt: skip

    assert torch.autograd.gradcheck(loss, (probs,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize(("bandwidths", "builds"), [(CRF, 1), ({**CRF, **NC}, 2)])
def test_one_affinity_when_bandwidths_coincide(monkeypatch, bandwidths, builds):
    calls = {"build": 0, "apply": 0}
    build = kernel_cut_module.gaussian_affinity

    def counting_build(*args, **kwargs):
        calls["build"] += 1
        operator = build(*args, **kwargs)

        def apply(values):
            calls["apply"] += 1
            return operator(values)

        return apply

    # the CRF affinity is built through losses.affinity, a distinct NC one in kernel_cut
    monkeypatch.setattr(affinity_module, "gaussian_affinity", counting_build)
    monkeypatch.setattr(kernel_cut_module, "gaussian_affinity", counting_build)
    probs = softmax_probs(1, 3, 4, 4).requires_grad_()
    kernel_cut_loss(random_images(1, 3, 4, 4), probs, backend="exact", **bandwidths).backward()
    assert calls == {"build": builds, "apply": builds}


def test_module_equals_function():
    images, probs = random_images(2, 3, 5, 6), softmax_probs(2, 3, 5, 6)
    module = KernelCutLoss(0.5, gamma=3.0, backend="exact", **CRF, **NC)
    expected = 0.5 * kernel_cut_loss(images, probs, gamma=3.0, backend="exact", **CRF, **NC)
    torch.testing.assert_close(module(images, probs), expected, rtol=0, atol=0)
    assert "gamma=3.0" in repr(module) and "nc_sigma_xy=2.0" in repr(module)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_lattice_gradient_equals_autograd_through_the_same_operator(device, normalization):
    images = random_images(2, 3, 6, 7).to(device)
    probs = softmax_probs(2, 3, 6, 7).to(device)
    valid = torch.ones(2, 6, 7, dtype=torch.bool, device=device)
    valid[1, 3:, :] = False
    mine = probs.clone().requires_grad_()
    kernel_cut_loss(
        images, mine, valid, gamma=0.5, normalization=normalization, **CRF, **NC
    ).backward()
    w = operator_matrix(
        PermutohedralLattice(intensity_position_features(images, 60.0, 3.0)), 2, (6, 7), device
    )
    w_nc = operator_matrix(
        PermutohedralLattice(intensity_position_features(images, 40.0, 2.0)), 2, (6, 7), device
    )
    ref = probs.clone().requires_grad_()
    loss = crf_reference(w, ref, valid, normalization) + 0.5 * nc_reference(w_nc, ref, valid)
    loss.backward()
    torch.testing.assert_close(mine.grad.cpu(), ref.grad.cpu(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_value_close_to_exact(device):
    images = torch.zeros(1, 3, 24, 24, device=device)
    images[..., 12:] = 200
    images = images + 20 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    probs = softmax_probs(1, 3, 24, 24).float().to(device)
    kwargs = {"sigma_rgb": 15.0, "sigma_xy": 8.0, "nc_sigma_xy": 5.0, "gamma": 0.5}
    exact = kernel_cut_loss(images, probs, backend="exact", **kwargs)
    approx = kernel_cut_loss(images, probs, **kwargs)
    assert abs(float(approx / exact) - 1) < 0.15, (approx, exact)
