"""A prebuilt :class:`GaussianAffinity` gives the losses of one built per call, and is built once;
the losses' value checks cost one host synchronization per call on the CPU, none on a GPU."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import weakseg.losses._affinity as shared_module
import weakseg.losses.affinity as affinity_module
from weakseg.losses import (
    GaussianAffinity,
    dense_crf_loss,
    grid_potts_loss,
    kernel_cut_loss,
    normalized_cut_loss,
)

from ._reference import random_images, softmax_probs

SIGMAS = {"sigma_rgb": 20.0, "sigma_xy": 3.0}


def _value_and_grad(loss_fn, images, probs, **kwargs):
    probs = probs.clone().requires_grad_()
    value = loss_fn(images, probs, **kwargs)
    value.backward()
    return value.detach(), probs.grad


@pytest.mark.parametrize("backend", ["exact", "lattice"])
@pytest.mark.parametrize(
    ("loss_fn", "extra"),
    [
        (dense_crf_loss, {}),
        (dense_crf_loss, {"normalization": "rloss", "scale_factor": 0.5}),
        (normalized_cut_loss, {}),
        (kernel_cut_loss, {"gamma": 0.5}),
    ],
)
def test_prebuilt_affinity_matches_the_one_built_per_call(loss_fn, extra, backend) -> None:
    torch.manual_seed(0)
    images, probs = random_images(2, 3, 12, 10), softmax_probs(2, 3, 12, 10)
    scale = extra.get("scale_factor", 1.0)
    affinity = GaussianAffinity(
        images, **SIGMAS, scale_factor=scale, backend=backend, dtype=probs.dtype
    )
    expected = _value_and_grad(loss_fn, images, probs, **SIGMAS, backend=backend, **extra)
    got = _value_and_grad(loss_fn, images, probs, affinity=affinity, **extra)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])


def test_kernel_cut_with_separate_nc_affinity() -> None:
    images, probs = random_images(1, 3, 8, 8), softmax_probs(1, 2, 8, 8)
    crf = GaussianAffinity(images, **SIGMAS, backend="exact", dtype=probs.dtype)
    nc = GaussianAffinity(images, sigma_rgb=40.0, sigma_xy=2.0, backend="exact", dtype=probs.dtype)
    expected = kernel_cut_loss(
        images, probs, **SIGMAS, nc_sigma_rgb=40.0, nc_sigma_xy=2.0, backend="exact"
    )
    got = kernel_cut_loss(images, probs, affinity=crf, nc_affinity=nc)
    torch.testing.assert_close(got, expected)


def test_a_prebuilt_affinity_is_not_rebuilt(monkeypatch) -> None:
    images = random_images(1, 3, 8, 8)
    affinity = GaussianAffinity(images, **SIGMAS, backend="exact", dtype=torch.float64)
    builds = []
    monkeypatch.setattr(affinity_module, "gaussian_affinity", lambda *a: builds.append(a))
    for _ in range(3):
        dense_crf_loss(images, softmax_probs(1, 2, 8, 8), affinity=affinity).item()
    assert builds == []


def test_prebuilt_affinity_errors() -> None:
    images = random_images(1, 3, 8, 8)
    affinity = GaussianAffinity(images, **SIGMAS, backend="exact", dtype=torch.float64)
    probs = softmax_probs(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"built for torch.float32 but the loss computes in .*64"):
        dense_crf_loss(images, probs, affinity=GaussianAffinity(images, backend="exact"))
    with pytest.raises(TypeError, match="affinity must be a GaussianAffinity, got function"):
        dense_crf_loss(images, probs, affinity=lambda v: v)
    other = random_images(1, 3, 6, 8)
    with pytest.raises(ValueError, match=r"built for batch size 1 and spatial size \(8, 8\)"):
        dense_crf_loss(other, softmax_probs(1, 2, 6, 8), affinity=affinity)
    with pytest.raises(ValueError, match=r"affinity was built with scale_factor=1.0.*0.5"):
        normalized_cut_loss(images, probs, scale_factor=0.5, affinity=affinity)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        GaussianAffinity(images, backend="numba")
    with pytest.raises(ValueError, match=r"images must hold intensities in the 0-255 range"):
        GaussianAffinity(images - 100)


@contextlib.contextmanager
def _count_host_syncs(monkeypatch):
    """Counts the Tensor -> Python conversions (each a device-to-host synchronization) made by
    the losses, not by the filtering engine they call (its checks are its own)."""
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    count, paused = [0], [False]

    def counting(original):
        def wrapper(self, *args, **kwargs):
            count[0] += not paused[0]
            return original(self, *args, **kwargs)

        return wrapper

    filter_values = GaussianAffinity.__call__

    def uncounted_filter(self, values):
        paused[0] = True
        try:
            return filter_values(self, values)
        finally:
            paused[0] = False

    monkeypatch.setattr(GaussianAffinity, "__call__", uncounted_filter)
    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        yield count
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize(
    "loss_fn", [dense_crf_loss, normalized_cut_loss, kernel_cut_loss, grid_potts_loss]
)
@pytest.mark.parametrize("masked", [False, True])
def test_one_host_synchronization_per_loss_call(loss_fn, masked, monkeypatch) -> None:
    images, probs = random_images(2, 3, 8, 8), softmax_probs(2, 3, 8, 8).requires_grad_()
    kwargs = {}
    if loss_fn is not grid_potts_loss:  # built outside: what is counted is the loss's own work
        kwargs["affinity"] = GaussianAffinity(images, backend="exact", dtype=probs.dtype)
    valid = torch.ones(2, 8, 8, dtype=torch.bool) if masked else None
    with _count_host_syncs(monkeypatch) as count:
        loss_fn(images, probs, valid, **kwargs).backward()
    assert count[0] == 1  # the value checks of images and probs, in one transfer
    # As on a GPU, where the checks are a device-side assertion: none at all.
    check = functools.partial(shared_module.check_images_and_probs, on_device=True)
    monkeypatch.setattr(shared_module, "check_images_and_probs", check)
    with _count_host_syncs(monkeypatch) as count:
        loss_fn(images, probs, valid, **kwargs).backward()
    assert count[0] == 0
