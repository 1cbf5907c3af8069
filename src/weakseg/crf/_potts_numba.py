"""The mean-field update of a Potts CRF in one JIT-compiled pass (numba, CPU, float32).

With the messages ``M(q)`` already summed over the kernels (self terms apart), an update is,
per point, ``q <- softmax(logits + M(q) - self_weight * q)`` over the K classes, then the
labeled points clamped to their label. PyTorch spends about ten passes over the ``[B, K, N]``
values on it (products, sums, max, exp, division); this kernel reads each input once and writes
``q`` in place, in blocks of 64 points laid out channel-major as the lattice returns them.

The exponential is computed in float32 arithmetic that vectorizes (a call to ``exp`` does not):
``exp(x) = 2^n exp(r)`` with ``n = round(x / ln 2)`` and ``|r| <= ln(2) / 2``, ``exp(r)`` by its
Taylor series to degree 7 (remainder < 6e-9) and ``2^n`` built from its exponent bits. The
result is within a few float32 ulps of ``exp``; softmax's arguments are <= 0 after subtracting
the maximum, and those below -87 (``exp`` < 2e-38, not a normal float32) are taken as -87.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCK = 64  # points per work item
_LOG2E = np.float32(1.4426950408889634)
_LN2_HIGH = np.float32(0.693145751953125)  # ln 2 = high + low, high exact in few bits
_LN2_LOW = np.float32(1.4286068203094172e-06)
_SMALLEST = np.float32(-87.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_INVERSE_FACTORIALS = tuple(np.float32(1.0 / f) for f in (2, 6, 24, 120, 720, 5040))


@njit(cache=True)
def _exp_block(x, out, exponent_bits, width):  # pragma: no cover - compiled
    """``out[:width] = exp(x[:width])`` for ``x <= 0`` (float32, vectorizes)."""
    c2, c3, c4, c5, c6, c7 = _INVERSE_FACTORIALS
    for i in range(width):
        value = max(x[i], _SMALLEST)
        n = np.floor(value * _LOG2E + _HALF)
        r = value - n * _LN2_HIGH - n * _LN2_LOW
        out[i] = _ONE + r * (_ONE + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
        exponent_bits[i] = (np.int32(n) + 127) << 23
    powers = exponent_bits.view(np.float32)  # 2^n
    for i in range(width):
        out[i] *= powers[i]


@njit(parallel=True, cache=True)
def potts_update_(logits, messages, q, neg_self_weight, labels):  # pragma: no cover - compiled
    """``q <- softmax(logits + messages + neg_self_weight * q)`` over dim 1, in place.

    Args:
        logits, messages, q: float32 ``[B, K, N]`` (C-contiguous).
        neg_self_weight: float32 ``[B, N]``, minus the summed self weights of the kernels.
        labels: int32 ``[B, N]``, a class id where q is clamped to that label, -1 elsewhere;
            or an empty ``[0, 0]`` array when nothing is clamped.
    """
    batch, classes, n = q.shape
    clamped = labels.shape[0] > 0
    blocks = (n + _BLOCK - 1) // _BLOCK
    for task in prange(batch * blocks):
        b, start = task // blocks, (task % blocks) * _BLOCK
        stop = min(n, start + _BLOCK)
        width = stop - start
        top = np.full(_BLOCK, -np.inf, np.float32)
        total = np.zeros(_BLOCK, np.float32)
        exp = np.empty(_BLOCK, np.float32)
        exponent_bits = np.empty(_BLOCK, np.int32)
        self_weight = neg_self_weight[b, start:stop]
        for c in range(classes):  # the new logits, kept in q (each entry read before written)
            row, logit = q[b, c, start:stop], logits[b, c, start:stop]
            message = messages[b, c, start:stop]
            for i in range(width):
                row[i] = logit[i] + message[i] + self_weight[i] * row[i]
                top[i] = max(top[i], row[i])
        for c in range(classes):
            row = q[b, c, start:stop]
            for i in range(width):
                row[i] -= top[i]
            _exp_block(row, exp, exponent_bits, width)
            for i in range(width):
                row[i] = exp[i]
                total[i] += exp[i]
        for i in range(width):
            total[i] = _ONE / total[i]
        for c in range(classes):
            row = q[b, c, start:stop]
            for i in range(width):
                row[i] *= total[i]
        if clamped:
            for i in range(width):
                label = labels[b, start + i]
                if label >= 0:
                    for c in range(classes):
                        q[b, c, start + i] = _ONE if c == label else _ZERO
