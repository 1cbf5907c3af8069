r"""SEC losses for image-tag supervision (Kolesnikov & Lampert, ECCV 2016), Table 3 of the paper.

"Seed, expand and constrain" trains a segmentation network from image-level tags with three
losses of the softmax output :math:`S` ``[B, K, *spatial]``:

- :func:`seeding_loss`: cross-entropy on sparse *localization cues* (seeds),
- :func:`expansion_loss`: image-level classification through global weighted rank pooling,
- :func:`constrain_to_boundary_loss`: KL divergence between :math:`S` and its dense CRF
  mean-field refinement.

:func:`sec_loss` adds them up; with ``boundary="dense_crf_loss"`` the third term is replaced by
the dense CRF loss of eq. (4) (:func:`~weakseg.losses.dense_crf_loss`), the variant of Table 3
that needs no iterative inference; ``boundary="none"`` leaves it out (seeding + expansion, the
first column of Table 3). ``scale_factor`` runs all three at a reduced resolution, like SEC's
41x41 score map of a 321x321 crop (``scale_factor=0.125``).

Localization cues. SEC's seeds come from class activation maps (CAM, Zhou et al. 2016) of a
classification network trained on the same tags, thresholded, plus a background cue from a
saliency map. **Computing them is out of scope here**: cues are an input, given either as a
tensor ``[B, K, *spatial]`` (bool or 0/1, several classes per pixel allowed) or as a folder of
PNGs read by :func:`load_cues` (one class id per pixel, ``255`` = no cue).

``weakseg train`` trains with :class:`SECLoss` through ``losses: {sec: {...}}`` (its keyword
arguments), the cues being the training labels (``cue_dir``, or the scribbles as a stand-in)
and the tags each sample's ``tags``; see :mod:`weakseg.engine.config`.

Example:
    >>> probs = torch.randn(2, 3, 16, 16).softmax(dim=1)
    >>> images = torch.rand(2, 3, 64, 64) * 255
    >>> cues = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    >>> cues[:, 0, :2], cues[:, 1, 8, 8] = True, True
    >>> tags = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    >>> out = sec_loss(probs, images, cues, tags, backend="exact")
    >>> sorted(out._fields)
    ['boundary', 'expansion', 'loss', 'seeding']
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import (
    check_choice,
    check_nonnegative,
    check_valid_mask,
)
from weakseg.crf.kernel_params import NORMALIZATIONS as CRF_NORMALIZATIONS
from weakseg.crf.kernel_params import KernelParams
from weakseg.losses._affinity import NORMALIZATIONS, check_probs
from weakseg.losses._module import LossModule, choice, own_checks
from weakseg.losses.constrain_to_boundary import (
    SEC_N_ITER,
    SEC_THETA_ALPHA,
    SEC_THETA_BETA,
    SEC_THETA_GAMMA,
    SEC_W_BILATERAL,
    SEC_W_GAUSSIAN,
    ConstrainToBoundaryLoss,
    constrain_to_boundary_loss,
    resize_images,
)
from weakseg.losses.cue_files import load_cues
from weakseg.losses.dense_crf import dense_crf_loss
from weakseg.losses.expansion import (
    ExpansionLoss,
    check_background_index,
    expansion_loss,
    global_weighted_rank_pooling,
)
from weakseg.losses.seeding import SeedingLoss, check_cues, cues_from_labels, seeding_loss

__all__ = [
    "ConstrainToBoundaryLoss",
    "ExpansionLoss",
    "SECLoss",
    "SECLossOutput",
    "SeedingLoss",
    "constrain_to_boundary_loss",
    "cues_from_labels",
    "expansion_loss",
    "global_weighted_rank_pooling",
    "load_cues",
    "sec_loss",
    "seeding_loss",
]

Boundary = Literal["crf_inference", "dense_crf_loss", "none"]
BOUNDARIES: tuple[str, ...] = ("crf_inference", "dense_crf_loss", "none")


def _check_scale_factor(value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"scale_factor must be a number in (0, 1], got {value!r}") from None
    if not 0 < number <= 1:
        raise ValueError(f"scale_factor must be in (0, 1] (a downscaling), got {value!r}")
    return number


def _check_background_index(name: str, value: int | None) -> int | None:
    """None or a class id >= 0 (its upper bound, K - 1, is checked at the call)."""
    if value is not None:
        check_background_index(value, value + 1)
    return value


def _rescale(
    probs: Tensor, cues: Tensor, valid_mask: Tensor | None, scale_factor: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``probs`` (bilinear), ``cues`` (max pooling) and ``valid_mask`` (nearest) at
    ``scale_factor`` of their spatial size.

    Max pooling makes a cell a cue of every class cued inside it, so that thin cues (scribbles)
    survive the shrinking; a bilinear mean of probabilities is still a distribution.
    """
    size = [int(s * scale_factor) for s in probs.shape[2:]]
    if min(size) < 1:
        raise ValueError(
            f"scale_factor={scale_factor} shrinks the spatial size {tuple(probs.shape[2:])} "
            f"to {tuple(size)}: use a larger scale_factor"
        )
    linear, pool = (
        ("bilinear", F.adaptive_max_pool2d)
        if probs.ndim == 4
        else ("trilinear", F.adaptive_max_pool3d)
    )
    probs = F.interpolate(probs, size=size, mode=linear, align_corners=False)  # (B, K, *size)
    cues = pool(cues.to(probs.dtype), size) > 0  # (B, K, *size)
    if valid_mask is not None:
        mask = valid_mask.unsqueeze(1).to(probs.dtype)
        valid_mask = F.interpolate(mask, size=size, mode="nearest")[:, 0] > 0.5  # (B, *size)
    return probs, cues, valid_mask


class SECLossOutput(NamedTuple):
    """What :func:`sec_loss` returns: the total and its three (unweighted) terms, all scalars.

    ``loss = seed_weight * seeding + expand_weight * expansion + boundary_weight * boundary``
    (``boundary`` is 0 with ``boundary="none"``); only ``loss`` needs backward, the terms are
    there for logging.
    """

    loss: Tensor
    seeding: Tensor
    expansion: Tensor
    boundary: Tensor


def sec_loss(
    probs: Tensor,
    images: Tensor,
    cues: Tensor,
    tags: Tensor,
    valid_mask: Tensor | None = None,
    *,
    boundary: Boundary = "crf_inference",
    seed_weight: float = 1.0,
    expand_weight: float = 1.0,
    boundary_weight: float = 1.0,
    scale_factor: float = 1.0,
    q_fg: float = 0.996,
    q_bg: float = 0.999,
    q_absent: float = 0.0,
    background_index: int | None = 0,
    n_iter: int = SEC_N_ITER,
    w_bilateral: float = SEC_W_BILATERAL,
    theta_alpha: float = SEC_THETA_ALPHA,
    theta_beta: float = SEC_THETA_BETA,
    w_gaussian: float = SEC_W_GAUSSIAN,
    theta_gamma: float = SEC_THETA_GAMMA,
    crf_normalization: str = "symmetric",
    backprop_crf: bool = False,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    loss_normalization: str = "affinity",
    backend: str = "lattice",
) -> SECLossOutput:
    r"""The SEC training loss, or its Table 3 variants with the dense CRF loss or without a
    boundary term.

    .. math::
        L = w_{s}\,L_{seed}(S, C) + w_{e}\,L_{expand}(S, T) + w_{b}\,L_{boundary}(S, I)

    with :math:`L_{boundary}` = :func:`constrain_to_boundary_loss` for
    ``boundary="crf_inference"`` (SEC), :func:`~weakseg.losses.dense_crf_loss` for
    ``boundary="dense_crf_loss"`` (Tang et al., Table 3: no iterative inference) or 0 for
    ``boundary="none"``. SEC weighs the three terms equally (all weights 1).

    With ``scale_factor < 1`` the three terms act on ``probs`` resized by that factor (bilinear;
    SEC's losses act on the 41x41 score map of a 321x321 crop, ``scale_factor=0.125``), the cues
    max-pooled to that size (a cell is a cue of every class cued inside it) and ``valid_mask``
    resized (nearest). ``images`` are resized (bilinear) to that size for either boundary term,
    so every spatial std (``theta_*``, ``sigma_xy``) is in pixels of the map the losses act on:
    for a score map at output stride 8, divide image-pixel stds by 8. The GWRP decays depend on
    that map's size too (SEC's are for 41x41). ``valid_mask`` only affects the boundary term
    (seeds and tags have no padding issue: leave padded pixels without cue).

    Args:
        probs: Tensor[B, K, *spatial], softmax probabilities.
        images: Tensor[B, C, *spatial'], 0-255 intensities.
        cues: Tensor[B, K, *spatial] bool or 0/1, see :func:`seeding_loss`.
        tags: Tensor[B, K] bool or 0/1, see :func:`expansion_loss`.
        valid_mask: optional bool Tensor[B, *spatial].
        boundary: ``"crf_inference"``, ``"dense_crf_loss"`` or ``"none"``.
        seed_weight, expand_weight, boundary_weight: the weights (>= 0) of the three terms.
        scale_factor: in (0, 1], the resolution of the losses relative to ``probs``.
        q_fg, q_bg, q_absent, background_index: see :func:`expansion_loss`.
        n_iter, w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, backprop_crf:
            see :func:`constrain_to_boundary_loss` (``crf_normalization`` is its
            ``normalization``); used with ``boundary="crf_inference"``.
        sigma_rgb, sigma_xy, loss_normalization: the dense CRF loss parameters (its
            ``normalization``); used with ``boundary="dense_crf_loss"``.
        backend: ``"lattice"`` or ``"exact"``, for either boundary term.

    Returns:
        :class:`SECLossOutput` ``(loss, seeding, expansion, boundary)``.

    Raises:
        ValueError: an unknown ``boundary``, a negative weight, a ``scale_factor`` outside
            (0, 1] or one that shrinks ``probs`` to nothing, and everything the three terms
            raise.
    """
    check_choice("boundary", boundary, BOUNDARIES)
    seed_weight = check_nonnegative("seed_weight", seed_weight)
    expand_weight = check_nonnegative("expand_weight", expand_weight)
    boundary_weight = check_nonnegative("boundary_weight", boundary_weight)
    scale_factor = _check_scale_factor(scale_factor)
    if scale_factor != 1:
        check_probs(probs, check_valid_mask(valid_mask, probs))
        probs, cues, valid_mask = _rescale(probs, check_cues(cues, probs), valid_mask, scale_factor)
    seed = seeding_loss(probs, cues)
    expand = expansion_loss(
        probs, tags, q_fg=q_fg, q_bg=q_bg, q_absent=q_absent, background_index=background_index
    )
    if boundary == "crf_inference":
        constrain = constrain_to_boundary_loss(
            probs,
            images,
            valid_mask,
            n_iter=n_iter,
            **KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma)._asdict(),
            normalization=crf_normalization,
            backend=backend,
            backprop_crf=backprop_crf,
        )
    elif boundary == "dense_crf_loss":
        constrain = dense_crf_loss(
            resize_images(images, probs),
            probs,
            valid_mask,
            sigma_rgb=sigma_rgb,
            sigma_xy=sigma_xy,
            normalization=loss_normalization,  # type: ignore[arg-type]
            backend=backend,  # type: ignore[arg-type]
        )
    else:
        constrain = seed.new_zeros(())
    total = seed_weight * seed + expand_weight * expand + boundary_weight * constrain
    return SECLossOutput(total, seed, expand, constrain)


class SECLoss(LossModule):
    """Holds the hyper-parameters of :func:`sec_loss`; ``forward`` returns its
    :class:`SECLossOutput`.

    Every hyper-parameter is checked here (the shared checks by name, plus its own), also
    those of the boundary term not in use, so that a bad value fails when the loss is built
    rather than at its first call. It is the
    ``losses: {sec: ...}`` training mode of ``weakseg train`` (see
    :mod:`weakseg.engine.config`).

    Example:
        >>> criterion = SECLoss(boundary="dense_crf_loss", sigma_xy=10.0, backend="exact")
        >>> probs = torch.randn(1, 2, 8, 8).softmax(dim=1)
        >>> cues = torch.zeros(1, 2, 8, 8, dtype=torch.bool); cues[0, 0, 0] = True
        >>> out = criterion(probs, torch.rand(1, 3, 8, 8) * 255, cues, torch.tensor([[1, 1]]))
        >>> out.loss.shape
        torch.Size([])
    """

    function = staticmethod(sec_loss)
    checks = own_checks(
        **ExpansionLoss.checks,
        boundary=choice(BOUNDARIES),
        seed_weight=check_nonnegative,
        expand_weight=check_nonnegative,
        boundary_weight=check_nonnegative,
        scale_factor=lambda name, value: _check_scale_factor(value),
        background_index=_check_background_index,
        crf_normalization=choice(CRF_NORMALIZATIONS),
        loss_normalization=choice(NORMALIZATIONS),
    )

    def extra_repr(self) -> str:
        common = (
            f"boundary={self.boundary!r}, seed_weight={self.seed_weight}, "
            f"expand_weight={self.expand_weight}, boundary_weight={self.boundary_weight}, "
            f"scale_factor={self.scale_factor}, q_fg={self.q_fg}, q_bg={self.q_bg}, "
            f"q_absent={self.q_absent}, background_index={self.background_index}"
        )
        if self.boundary == "crf_inference":
            specific = (
                f", n_iter={self.n_iter}, w_bilateral={self.w_bilateral}, "
                f"theta_alpha={self.theta_alpha:.4g}, theta_beta={self.theta_beta}, "
                f"w_gaussian={self.w_gaussian}, theta_gamma={self.theta_gamma:.4g}, "
                f"crf_normalization={self.crf_normalization!r}, "
                f"backprop_crf={self.backprop_crf}"
            )
        elif self.boundary == "dense_crf_loss":
            specific = (
                f", sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
                f"loss_normalization={self.loss_normalization!r}"
            )
        else:
            return common
        return f"{common}{specific}, backend={self.backend!r}"
