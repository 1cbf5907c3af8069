"""dense_gaussian_filter against a brute-force dense affinity matrix."""

from __future__ import annotations

import pytest
import torch

from weakseg.filtering import dense_gaussian_filter
from weakseg.filtering import exact as exact_module


def dense_affinity(features: torch.Tensor) -> torch.Tensor:
    """W [B, N, N] with W_pq = exp(-|f_p - f_q|^2 / 2), built the obvious way."""
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    diff = flat[:, :, :, None] - flat[:, :, None, :]  # (B, D, N, N)
    return torch.exp(-0.5 * (diff**2).sum(dim=1))


def test_matches_dense_affinity(device: torch.device) -> None:
    features = torch.randn(2, 4, 5, 6, dtype=torch.float64, device=device) * 1.5
    values = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device)
    expected = torch.einsum(
        "bpq,bcq->bcp", dense_affinity(features), values.reshape(2, 3, -1)
    ).reshape(values.shape)
    torch.testing.assert_close(
        dense_gaussian_filter(values, features), expected, rtol=1e-12, atol=1e-12
    )


def test_float32_is_accurate(device: torch.device) -> None:
    # Differences, not |a|^2 + |b|^2 - 2ab: float32 keeps ~1e-6 relative accuracy even for
    # features far from the origin (raw 0-255 colours divided by 15 reach ~17).
    features = torch.rand(1, 5, 12, 12, dtype=torch.float64, device=device) * 17
    values = torch.rand(1, 2, 12, 12, dtype=torch.float64, device=device)
    reference = dense_gaussian_filter(values, features)
    single = dense_gaussian_filter(values.float(), features.float()).double()
    assert float((single - reference).norm() / reference.norm()) < 1e-6


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    features = torch.randn(1, 3, 50, dtype=torch.float64)
    values = torch.randn(1, 2, 50, dtype=torch.float64)
    whole = dense_gaussian_filter(values, features)
    monkeypatch.setattr(exact_module, "_CHUNK_ELEMENTS", 7)  # a few rows per block
    torch.testing.assert_close(dense_gaussian_filter(values, features), whole)


def test_self_term_included() -> None:
    # Points far apart: each output is its own value (weight exp(0) = 1).
    features = torch.tensor([[[0.0, 100.0, 200.0]]], dtype=torch.float64)
    values = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    torch.testing.assert_close(dense_gaussian_filter(values, features), values)


def test_gradcheck() -> None:
    features = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    values = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dense_gaussian_filter, (values, features))


def test_dtype_mismatch_is_an_error() -> None:
    with pytest.raises(TypeError, match="same dtype"):
        dense_gaussian_filter(torch.rand(1, 1, 4), torch.rand(1, 2, 4, dtype=torch.float64))
