"""Brute-force dense CRF pieces on tiny inputs: explicit N x N kernels, no filtering engine."""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg.filtering import intensity_position_features, position_features


def kernel_matrix(features: Tensor) -> Tensor:
    """Tensor[B, N, N] with exp(-|f_p - f_q|^2 / 2) for features [B, D, *spatial]."""
    points = features.flatten(2).transpose(1, 2)  # (B, N, D)
    return torch.exp(-0.5 * torch.cdist(points, points).square())


def pairwise_matrix(images, w_b, t_a, t_b, w_g, t_g, normalization) -> Tensor:
    """sum_m w_m (K~_m with zero diagonal): Tensor[B, N, N]."""
    total = 0
    b, spatial = images.shape[0], images.shape[2:]
    feats = [
        (w_b, intensity_position_features(images, t_b, t_a)),
        (w_g, position_features(b, spatial, t_g, dtype=images.dtype)),
    ]
    for weight, f in feats:
        k = kernel_matrix(f)
        if normalization == "symmetric":
            s = k.sum(dim=2).rsqrt()  # (B, N)
            k = s[:, :, None] * k * s[:, None, :]
        k = k - torch.diag_embed(torch.diagonal(k, dim1=1, dim2=2))
        total = total + weight * k
    return total


def mean_field_step(logits, q, pairwise, compat) -> Tensor:
    """One parallel update with explicit matrices; q, logits [B, K, *spatial]."""
    b, k = q.shape[:2]
    flat_q = q.reshape(b, k, -1)  # (B, K, N)
    messages = flat_q @ pairwise.transpose(1, 2)  # (B, K, N)
    potential = torch.einsum("kl,bln->bkn", compat, messages)
    return torch.softmax(logits.reshape(b, k, -1) - potential, dim=1).reshape(q.shape)


def free_energy(logits, q, pairwise, compat) -> Tensor:
    """F(Q) = <Q, U> + 1/2 sum_{p != q} k_pq Q_p' mu Q_q + sum Q log Q, per image."""
    b, k = q.shape[:2]
    flat_q = q.reshape(b, k, -1)
    unary = -torch.log_softmax(logits, dim=1).reshape(b, k, -1)
    quad = torch.einsum("bkp,kl,bpq,blq->b", flat_q, compat, pairwise, flat_q)
    return (flat_q * unary).sum((1, 2)) + 0.5 * quad + torch.xlogy(flat_q, flat_q).sum((1, 2))
