"""What every regularizer shares (``weakseg.losses._affinity``): input checks, the valid mask,
autocast, devices. Parametrized over the four regularizers, dense ones on the exact backend."""

import functools
import re

import pytest
import torch

import weakseg.losses._affinity as affinity_module
from weakseg.losses import dense_crf_loss, grid_potts_loss, kernel_cut_loss, normalized_cut_loss

from ._reference import DEVICES, random_images, softmax_probs

REGULARIZERS = {
    "crf": functools.partial(dense_crf_loss, backend="exact", sigma_rgb=60.0, sigma_xy=3.0),
    "nc": functools.partial(normalized_cut_loss, backend="exact", sigma_rgb=60.0, sigma_xy=3.0),
    "kc": functools.partial(
        kernel_cut_loss, backend="exact", sigma_rgb=60.0, sigma_xy=3.0, nc_sigma_xy=2.0, gamma=0.5
    ),
    "potts": functools.partial(grid_potts_loss, sigma_rgb=60.0),
}
DENSE = {"crf": dense_crf_loss, "nc": normalized_cut_loss, "kc": kernel_cut_loss}


@pytest.fixture(params=list(REGULARIZERS), ids=list(REGULARIZERS))
def loss_fn(request):
    return REGULARIZERS[request.param]


def _inputs(batch=2, classes=3, spatial=(5, 6)):
    return random_images(batch, 3, *spatial), softmax_probs(batch, classes, *spatial)


def test_bad_probs(loss_fn):
    images, probs = _inputs()
    with pytest.raises(ValueError, match=r"probs must sum to 1 over the K=3 classes"):
        loss_fn(images, probs * 1.1)
    with pytest.raises(ValueError, match="pass softmax"):
        loss_fn(images, torch.randn_like(probs).abs())
    negative = probs.clone()
    negative[0, 0, 0, 0], negative[0, 1, 0, 0] = -0.5, negative[0, 1, 0, 0] + 0.5
    with pytest.raises(ValueError, match="1 valid pixels have negative entries"):
        loss_fn(images, negative)
    nan = probs.clone()
    nan[1, :, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) at 1 valid pixels"):
        loss_fn(images, nan)
    with pytest.raises(TypeError, match="probs must be a floating-point"):
        loss_fn(images, probs.long())
    with pytest.raises(ValueError, match=r"probs must have shape \[B, K, H, W\]"):
        loss_fn(images, probs[0])
    with pytest.raises(TypeError, match=r"probs must be a torch\.Tensor"):
        loss_fn(images, probs.tolist())


def test_bad_images(loss_fn):
    images, probs = _inputs()
    images[0, 0, 0, 0] = 0
    with pytest.raises(ValueError, match=r"0-255 range.*got values in \[-2"):
        loss_fn(images - 2, probs)
    images[0, 0, 0, 0] = 255
    with pytest.raises(ValueError, match=r"0-255 range.*got values in \[.*, 256\].*normalized"):
        loss_fn(images + 1, probs)
    with_inf = images.clone()
    with_inf[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="images contains 1 non-finite"):
        loss_fn(with_inf, probs)
    with pytest.raises(TypeError, match="images must be a real-valued"):
        loss_fn(images > 100, probs)
    with pytest.raises(TypeError, match=r"images must be a torch\.Tensor"):
        loss_fn(images.numpy(), probs)
    with pytest.raises(ValueError, match="batch size mismatch: probs has 2"):
        loss_fn(images[:1], probs)
    with pytest.raises(ValueError, match=r"spatial size mismatch: probs has \(5, 6\)"):
        loss_fn(images[..., :5], probs)


def test_unit_range_images_warn(loss_fn):
    images, probs = _inputs()
    with pytest.warns(UserWarning, match="expect 0-255 intensities"):
        loss_fn(images / 255, probs)


def test_uint8_images_equal_float_images(loss_fn):
    images, probs = _inputs()
    rounded = images.round()
    expected = loss_fn(rounded, probs)
    torch.testing.assert_close(loss_fn(rounded.to(torch.uint8), probs), expected)


@pytest.fixture
def device_checks(monkeypatch):
    """The losses check values as on a GPU (one device-side assertion), here on the CPU."""
    check = functools.partial(affinity_module.check_images_and_probs, on_device=True)
    monkeypatch.setattr(affinity_module, "check_images_and_probs", check)


@pytest.mark.usefixtures("device_checks")
def test_device_side_checks_reject_what_the_host_checks_name(loss_fn):
    # On a GPU the value checks are one torch._assert_async (on the CPU: RuntimeError).
    images, probs = _inputs()
    negative = probs.clone()
    negative[0, 0, 0, 0], negative[0, 1, 0, 0] = -0.5, negative[0, 1, 0, 0] + 0.5
    nan, with_inf, too_dark, too_bright = (
        probs.clone(),
        images.clone(),
        images.clone(),
        images.clone(),
    )
    nan[1, :, 2, 2], with_inf[0, 0, 0, 0] = float("nan"), float("inf")
    too_dark[0, 1, 2, 3], too_bright[1, 2, 0, 0] = -1, 256
    negative_integers = images.round().to(torch.int32)
    negative_integers[0, 1, 1, 1] = -1
    message = re.escape(affinity_module.DEVICE_CHECK_MESSAGE)
    for bad_images, bad_probs in [
        (images, probs * 1.1),
        (images, torch.randn_like(probs).abs()),
        (images, negative),
        (images, nan),
        (too_dark, probs),
        (too_bright, probs),
        (with_inf, probs),
        (negative_integers, probs),
    ]:
        with pytest.raises(RuntimeError, match=message):
            loss_fn(bad_images, bad_probs)
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[1, 2, 2] = False  # the NaN pixel is excluded: nothing to reject
    assert torch.isfinite(loss_fn(images, nan, valid))
    assert torch.isfinite(loss_fn(images.round().to(torch.uint8), probs))
    assert len(affinity_module.DEVICE_CHECK_MESSAGE) < 255  # CUDA's limit for the message


def test_bad_valid_mask(loss_fn):
    images, probs = _inputs()
    with pytest.raises(TypeError, match=r"valid_mask must be a bool tensor.*mask.bool\(\)"):
        loss_fn(images, probs, torch.ones(2, 5, 6))
    with pytest.raises(ValueError, match=r"valid_mask must have shape \[B, \*spatial\] = \(2, 5"):
        loss_fn(images, probs, torch.ones(2, 6, 5, dtype=torch.bool))


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_bad_hyper_parameters(name):
    images, probs = _inputs()
    function = DENSE.get(name, grid_potts_loss)
    if name != "nc":  # normalized cut is scale-free: it has no normalization argument
        with pytest.raises(ValueError, match=r"normalization must be one of \('affinity'"):
            function(images, probs, normalization="mean")
    with pytest.raises(ValueError, match="sigma_rgb must be a finite number > 0, got -1"):
        function(images, probs, sigma_rgb=-1)
    if name in DENSE:
        with pytest.raises(ValueError, match=r"backend must be one of \('lattice', 'exact'\)"):
            function(images, probs, backend="cuda")
        with pytest.raises(ValueError, match="sigma_xy must be a finite number > 0"):
            function(images, probs, sigma_xy=0)
        with pytest.raises(ValueError, match=r"scale_factor=0.1 shrinks.*every side must stay"):
            function(images, probs, scale_factor=0.1, backend="exact")
        with pytest.raises(ValueError, match="spacing must give one value per spatial axis"):
            function(images, probs, spacing=(1.0, 1.0, 1.0), backend="exact")
    if name == "kc":
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0, got -1"):
            kernel_cut_loss(images, probs, gamma=-1)
        with pytest.raises(ValueError, match="nc_sigma_xy must be a finite number > 0"):
            kernel_cut_loss(images, probs, nc_sigma_xy=float("inf"))


def test_excluded_pixels_are_removed_from_the_graph(loss_fn):
    # Excluding the two right columns equals cropping them away (positions are relative).
    images, probs = _inputs()
    valid = torch.ones(2, 5, 6, dtype=torch.bool)
    valid[..., 4:] = False
    padded = probs.clone()
    padded[..., 4:] = float("nan")  # whatever is in the padding never enters
    masked = padded.clone().requires_grad_()
    value = loss_fn(images, masked, valid)
    value.backward()
    torch.testing.assert_close(value, loss_fn(images[..., :4], probs[..., :4]))
    assert (masked.grad[..., 4:] == 0).all() and torch.isfinite(masked.grad).all()


def test_no_valid_pixel_gives_zero(loss_fn):
    images, probs = _inputs()
    probs.requires_grad_()
    value = loss_fn(images, probs, torch.zeros(2, 5, 6, dtype=torch.bool))
    value.backward()
    assert float(value.detach()) == 0 and (probs.grad == 0).all()


def test_no_gradient_into_images_and_no_in_place_change(loss_fn):
    images, probs = _inputs()
    images.requires_grad_()
    probs.requires_grad_()
    images_before, probs_before = images.detach().clone(), probs.detach().clone()
    loss_fn(images, probs, torch.ones(2, 5, 6, dtype=torch.bool)).backward()
    assert images.grad is None and probs.grad is not None
    assert torch.equal(images, images_before) and torch.equal(probs, probs_before)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_computes_in_float32(loss_fn, device):
    images, probs = _inputs()
    images, probs = images.float().to(device), probs.to(device=device, dtype=torch.bfloat16)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        value = loss_fn(images, probs)
    assert value.dtype == torch.float32 and value.device.type == device
    torch.testing.assert_close(value, loss_fn(images, probs.float()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_volume_with_spacing(loss_fn, device):
    images = random_images(1, 1, 3, 4, 5).to(device)
    probs = softmax_probs(1, 2, 3, 4, 5).to(device).requires_grad_()
    value = loss_fn(images, probs, spacing=(3.0, 1.0, 1.0))
    value.backward()
    assert value.ndim == 0 and torch.isfinite(probs.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch(loss_fn):
    images, probs = _inputs()
    with pytest.raises(ValueError, match="probs is on cuda"):
        loss_fn(images, probs.cuda())
