"""The dense CRF loss's "rloss_original" normalization: the original filter's scale."""

from __future__ import annotations

import pytest
import torch

from weakseg.losses import dense_crf_loss
from weakseg.losses.dense_crf import RLOSS_ORIGINAL_SCALE, DenseCRFLoss


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, 12, 14, generator=generator) * 255
    probs = torch.randn(2, 4, 12, 14, generator=generator, dtype=torch.float64).softmax(dim=1)
    return images, probs


@pytest.mark.parametrize("backend", ["lattice", "exact"])
def test_value_and_gradient_are_rloss_times_the_original_scale(backend: str) -> None:
    images, probs = _inputs()
    results = {}
    for normalization in ("rloss", "rloss_original"):
        leaf = probs.clone().requires_grad_()
        value = dense_crf_loss(
            images, leaf, sigma_rgb=15.0, sigma_xy=5.0, normalization=normalization, backend=backend
        )
        (value * 3.0).backward()  # an incoming gradient other than 1
        assert leaf.grad is not None
        results[normalization] = (value.detach(), leaf.grad)
    (value, grad), (scaled, scaled_grad) = results["rloss"], results["rloss_original"]
    assert float(value) < 0
    torch.testing.assert_close(scaled, value * RLOSS_ORIGINAL_SCALE)
    torch.testing.assert_close(scaled_grad, grad * RLOSS_ORIGINAL_SCALE)


def test_gradient_matches_finite_differences() -> None:
    images, probs = _inputs(1)
    leaf = probs.clone().requires_grad_()

    def loss(p: torch.Tensor) -> torch.Tensor:
        return dense_crf_loss(
            images, p, sigma_rgb=15.0, sigma_xy=5.0, normalization="rloss_original", backend="exact"
        )

    assert torch.autograd.gradcheck(loss, (leaf,), eps=1e-6, atol=1e-6)


def test_scale_is_the_measured_factor() -> None:
    # benchmarks/versus_original.py measured original loss / ours = 0.545-0.585.
    assert 0.545 <= RLOSS_ORIGINAL_SCALE <= 0.585


def test_module_accepts_it_and_unknown_names_are_refused() -> None:
    images, probs = _inputs()
    criterion = DenseCRFLoss(weight=2e-9, sigma_xy=5.0, normalization="rloss_original")
    assert float(criterion(images, probs.float())) < 0
    with pytest.raises(ValueError, match="rloss_original"):
        dense_crf_loss(images, probs, normalization="original")  # type: ignore[arg-type]
