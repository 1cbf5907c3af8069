r"""SEC's expansion loss: image-level tags through global weighted rank pooling (GWRP)."""

from __future__ import annotations

import torch
from torch import Tensor

from weakseg._validation import (
    check_same_device,
    check_tensor,
)
from weakseg.losses._affinity import check_probs
from weakseg.losses._module import WeightedLoss, own_checks
from weakseg.losses._sec_common import check_binary, compute_dtype, safe_log

__all__ = ["ExpansionLoss", "expansion_loss", "global_weighted_rank_pooling"]


def check_decay(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (a decay rate), got {value!r}")
    return number


def check_tags(tags: Tensor, probs: Tensor) -> Tensor:
    check_tensor("tags", tags)
    expected = tuple(probs.shape[:2])
    if tuple(tags.shape) != expected:
        raise ValueError(
            f"tags must have shape [B, K] = {expected} to match probs of shape "
            f"{tuple(probs.shape)}, got {tuple(tags.shape)}"
        )
    check_same_device("tags", tags, "probs", probs)
    return check_binary("tags", tags, "[B, K]")


def check_background_index(background_index: int | None, num_classes: int) -> None:
    if background_index is None:
        return
    if isinstance(background_index, bool) or not isinstance(background_index, int):
        raise TypeError(f"background_index must be an int or None, got {background_index!r}")
    if not 0 <= background_index < num_classes:
        raise ValueError(
            f"background_index must be in 0..{num_classes - 1} (K={num_classes}) or None, "
            f"got {background_index}"
        )


def _decays(
    tags: Tensor,
    background_index: int | None,
    q_fg: float,
    q_bg: float,
    q_absent: float,
    dtype: torch.dtype,
) -> Tensor:
    """Per-class decay ``[B, K]``: q_bg for background, q_fg for present, q_absent for absent."""
    # Built in the compute dtype: a float32 detour would turn 0.996 into 0.99599999...
    decay = torch.full(tags.shape, q_absent, dtype=dtype, device=tags.device)
    decay = torch.where(tags, torch.full_like(decay, q_fg), decay)
    if background_index is not None:
        decay[:, background_index] = q_bg
    return decay


def global_weighted_rank_pooling(probs: Tensor, decay: Tensor) -> Tensor:
    r"""Global weighted rank pooling ``[B, K]`` of ``probs [B, K, *spatial]`` (SEC, eq. (4)).

    .. math::
        G_k(S; d_k) = \frac{1}{Z(d_k)} \sum_{j=1}^{N} d_k^{\,j-1} S_{k, i_j},
        \qquad Z(d) = \sum_{j=1}^{N} d^{\,j-1},

    where :math:`i_1, \dots, i_N` orders the pixels by decreasing :math:`S_k`. ``d = 1`` gives
    mean pooling, ``d = 0`` max pooling (:math:`0^0 = 1`).

    Args:
        probs: Tensor[B, K, *spatial].
        decay: Tensor[B, K] (or broadcastable), values in [0, 1].
    """
    values = probs.flatten(2).sort(dim=2, descending=True).values  # (B, K, N)
    rank = torch.arange(values.shape[2], device=probs.device, dtype=values.dtype)  # (N,)
    weights = decay.to(values).unsqueeze(-1).pow(rank)  # (B, K, N)
    return (values * weights).sum(dim=2) / weights.sum(dim=2)


def expansion_loss(
    probs: Tensor,
    tags: Tensor,
    *,
    q_fg: float = 0.996,
    q_bg: float = 0.999,
    q_absent: float = 0.0,
    background_index: int | None = 0,
) -> Tensor:
    r"""Expansion loss: image-level classification from global weighted rank pooling (GWRP).

    With :math:`G_k` the GWRP of :math:`S_k` (:func:`global_weighted_rank_pooling`), :math:`T`
    the foreground classes tagged present and :math:`\bar T` those absent,

    .. math::
        L_{expand} = -\frac{1}{|T|} \sum_{k \in T} \log G_k(S; q_{fg})
                     -\frac{1}{|\bar T|} \sum_{k \in \bar T} \log\big(1 - G_k(S; q_{absent})\big)
                     -\log G_{bg}(S; q_{bg}),

    per image, averaged over the batch; a sum over an empty set counts 0. SEC's decays are
    ``q_fg=0.996``, ``q_bg=0.999`` (background is expected to cover more of the image) and
    ``q_absent=0`` (max pooling: every pixel of an absent class must have low probability).
    The background class is always present: ``tags[:, background_index]`` is ignored. With
    ``background_index=None`` every class is treated as foreground.

    Args:
        probs: Tensor[B, K, *spatial], softmax probabilities.
        tags: Tensor[B, K] bool or 0/1, the image-level labels.
        q_fg, q_bg, q_absent: decays in [0, 1] for present foreground, background and absent
            classes (1 = mean pooling, 0 = max pooling).
        background_index: the background class id, or ``None``.

    Returns:
        Tensor[] (scalar), float32 (float64 for float64 ``probs``).

    Raises:
        ValueError: a decay outside [0, 1], ``tags`` of shape other than ``[B, K]`` or not 0/1,
            ``background_index`` outside ``0..K-1``, ``probs`` not probabilities.
        TypeError: non-tensor inputs, integer ``probs``.

    Example:
        >>> probs = torch.full((1, 2, 4, 4), 0.5)
        >>> expansion_loss(probs, torch.tensor([[1, 1]]))  # -log(0.5) - log(0.5)
        tensor(1.3863)
    """
    q_fg = check_decay("q_fg", q_fg)
    q_bg = check_decay("q_bg", q_bg)
    q_absent = check_decay("q_absent", q_absent)
    check_probs(probs, None)
    tags = check_tags(tags, probs)
    check_background_index(background_index, probs.shape[1])
    probs = probs.to(compute_dtype(probs))
    pooled = global_weighted_rank_pooling(
        probs, _decays(tags, background_index, q_fg, q_bg, q_absent, probs.dtype)
    )  # (B, K)
    foreground = torch.ones_like(tags)
    if background_index is not None:
        foreground[:, background_index] = False
    present = tags & foreground
    absent = ~tags & foreground
    zero = pooled.new_zeros(())
    present_term = torch.where(present, -safe_log(pooled), zero).sum(dim=1)
    absent_term = torch.where(absent, -safe_log(1 - pooled), zero).sum(dim=1)
    loss = present_term / present.sum(dim=1).clamp_min(1) + absent_term / absent.sum(
        dim=1
    ).clamp_min(1)  # (B,)
    if background_index is not None:
        loss = loss - safe_log(pooled[:, background_index])
    return loss.mean()


class ExpansionLoss(WeightedLoss):
    """``weight * expansion_loss(probs, tags, ...)``; see :func:`expansion_loss`."""

    function = staticmethod(expansion_loss)
    checks = own_checks(q_fg=check_decay, q_bg=check_decay, q_absent=check_decay)
