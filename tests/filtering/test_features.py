"""Feature builders: layout, scaling and input checks."""

from __future__ import annotations

import pytest
import torch

from weakseg.filtering import (
    concat_features,
    intensity_xy_features,
    position_features,
    rgbxy_features,
    volume_features,
)


def test_rgbxy_layout_and_scaling(device: torch.device) -> None:
    images = torch.rand(2, 3, 4, 5, device=device) * 255
    features = rgbxy_features(images, sigma_rgb=15.0, sigma_xy=80.0)
    assert features.shape == (2, 5, 4, 5)
    x = torch.arange(5, device=device, dtype=torch.float32) / 80.0
    y = torch.arange(4, device=device, dtype=torch.float32) / 80.0
    torch.testing.assert_close(features[0, 0], x.expand(4, 5))
    torch.testing.assert_close(features[1, 1], y[:, None].expand(4, 5))
    torch.testing.assert_close(features[:, 2:], images / 15.0)


def test_gray_and_multichannel() -> None:
    gray = torch.rand(1, 1, 6, 7) * 255
    assert intensity_xy_features(gray, 10.0, 5.0).shape == (1, 3, 6, 7)
    multi = torch.rand(1, 4, 6, 7)
    assert intensity_xy_features(multi, 0.1, 5.0).shape == (1, 6, 6, 7)


def test_volume_spacing_is_physical() -> None:
    volumes = torch.rand(1, 2, 3, 4, 5)
    features = volume_features(volumes, 10.0, 2.0, spacing=(4.0, 1.0, 0.5))
    assert features.shape == (1, 5, 3, 4, 5)
    # channels: x (axis W, step 0.5), y (axis H, step 1), z (axis D, step 4), then intensities
    assert features[0, 0, 0, 0, 1] == pytest.approx(0.5 / 2.0)
    assert features[0, 1, 0, 1, 0] == pytest.approx(1.0 / 2.0)
    assert features[0, 2, 1, 0, 0] == pytest.approx(4.0 / 2.0)
    torch.testing.assert_close(features[:, 3:], volumes / 10.0)


def test_position_features_batch_and_dtype() -> None:
    coords = position_features(3, (2, 2), 1.0, dtype=torch.float64)
    assert coords.shape == (3, 2, 2, 2) and coords.dtype == torch.float64


def test_concat_with_network_features() -> None:
    rgbxy = rgbxy_features(torch.rand(2, 3, 8, 8) * 255, 15.0, 80.0)
    learned = torch.randn(2, 16, 8, 8) / 2.0
    assert concat_features(rgbxy, learned).shape == (2, 21, 8, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: rgbxy_features(torch.rand(1, 1, 4, 4), 15, 80), ValueError, "3 colour channels"),
        (lambda: rgbxy_features(torch.rand(3, 4, 4), 15, 80), ValueError, r"\[B, 3, H, W\]"),
        (lambda: rgbxy_features(torch.rand(1, 3, 4, 4), 0.0, 80), ValueError, "sigma_intensity"),
        (lambda: rgbxy_features(torch.rand(1, 3, 4, 4), 15, -1), ValueError, "sigma"),
        (
            lambda: rgbxy_features(torch.ones(1, 3, 4, 4, dtype=torch.uint8), 15, 80),
            TypeError,
            "floating-point",
        ),
        (
            lambda: rgbxy_features(torch.full((1, 3, 4, 4), float("nan")), 15, 80),
            ValueError,
            "non-finite",
        ),
        (lambda: rgbxy_features(torch.rand(1, 3, 0, 4), 15, 80), ValueError, "empty"),
        (lambda: rgbxy_features([[1.0]], 15, 80), TypeError, "torch.Tensor"),
        (
            lambda: volume_features(torch.rand(1, 1, 2, 2, 2), 1, 1, spacing=(1, 1)),
            ValueError,
            "one value per spatial axis",
        ),
        (
            lambda: volume_features(torch.rand(1, 1, 2, 2, 2), 1, 1, spacing=(1, 0, 1)),
            ValueError,
            r"spacing\[1\]",
        ),
        (lambda: concat_features(), ValueError, "at least one"),
        (
            lambda: concat_features(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 5)),
            ValueError,
            r"features\[1\] has shape",
        ),
        (
            lambda: concat_features(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4).double()),
            ValueError,
            "float64",
        ),
    ],
)
def test_bad_input(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()
