"""The fused Potts mean-field update kernel against PyTorch's softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakseg.filtering.lattice import numba_available

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")

if numba_available():
    from weakseg.crf._potts_numba import _exp_block, potts_update_


def test_exp_block_is_within_a_few_float32_ulps() -> None:
    x = np.concatenate([-np.linspace(0, 87, 4000), -np.random.default_rng(0).random(4000) * 20])
    x = x.astype(np.float32)
    out = np.empty(64, np.float32)
    bits = np.empty(64, np.int32)
    worst = 0.0
    for start in range(0, x.size, 64):
        chunk = x[start : start + 64].copy()
        _exp_block(chunk, out, bits, chunk.size)
        exact = np.exp(chunk.astype(np.float64))
        worst = max(worst, float(np.max(np.abs(out[: chunk.size] - exact) / exact)))
    assert worst < 4 * np.finfo(np.float32).eps


@pytest.mark.parametrize("clamped", [False, True])
def test_update_equals_softmax_of_the_new_logits(clamped: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    batch, classes, n = 2, 5, 1000  # n not a multiple of the 64-point blocks
    logits = torch.randn(batch, classes, n, generator=generator) * 30  # some exp underflow
    messages = torch.randn(batch, classes, n, generator=generator)
    q = torch.softmax(torch.randn(batch, classes, n, generator=generator), dim=1)
    neg_self = -torch.rand(batch, n, generator=generator)
    expected = torch.softmax(logits + messages + neg_self[:, None] * q, dim=1)
    labels = torch.full((batch, n), -1, dtype=torch.int32)
    if clamped:
        labels[0, ::7], labels[1, 3] = 2, 4
        expected[0, :, ::7] = torch.nn.functional.one_hot(torch.tensor(2), classes)[:, None]
        expected[1, :, 3] = torch.nn.functional.one_hot(torch.tensor(4), classes)
    label_array = labels.numpy() if clamped else np.empty((0, 0), np.int32)
    potts_update_(logits.numpy(), messages.numpy(), q.numpy(), neg_self.numpy(), label_array)
    torch.testing.assert_close(q, expected, rtol=1e-5, atol=1e-7)
