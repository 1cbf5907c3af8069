"""The dense CRF loss, eq. (4): a relaxed Potts model over a dense Gaussian affinity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from weakseg._validation import check_choice
from weakseg.losses._affinity import (
    NORMALIZATIONS,
    RLOSS_ORIGINAL_SCALE,
    Affinity,
    Backend,
    affinity_mass,
    broadcast_grad,
    crf_grad,
    crf_value,
    filter_segments,
    rloss_scale,
)
from weakseg.losses._module import WeightedLoss, choice, own_checks
from weakseg.losses.affinity import GaussianAffinity, check_dense_arguments, dense_inputs

__all__ = ["DENSE_CRF_NORMALIZATIONS", "RLOSS_ORIGINAL_SCALE", "DenseCRFLoss", "dense_crf_loss"]

# The shared normalizations plus "rloss_original" (the original filter's scale, dense CRF only).
DENSE_CRF_NORMALIZATIONS: tuple[str, ...] = (*NORMALIZATIONS, "rloss_original")
_RLOSS_TYPES = ("rloss", "rloss_original")
DenseCRFNormalization = Literal["affinity", "none", "rloss", "rloss_original"]


def _graph_freed_after_backward() -> bool:
    """Whether the running backward frees the graph's saved tensors after it (neither
    ``retain_graph`` nor ``create_graph``), as PyTorch's own compiled autograd asks; False
    where this PyTorch cannot tell."""
    keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return keep_graph is not None and not keep_graph()


class _DenseCRFFunction(torch.autograd.Function):
    """Per-image values ``[B]``; the backward reuses the forward's ``W S`` and ``W m``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, segmentation: Tensor, mask: Tensor, affinity: Affinity, normalization: str
    ) -> Tensor:
        ws, degree = filter_segments(
            affinity, segmentation, mask, normalization not in _RLOSS_TYPES
        )
        mass = affinity_mass(mask, degree) if normalization == "affinity" else None
        ctx.normalization = normalization
        ctx.save_for_backward(ws, degree, mass)
        return crf_value(segmentation, ws, degree, mass, normalization)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_value: Tensor) -> tuple[Tensor | None, ...]:
        ws, degree, mass = ctx.saved_tensors
        if ctx.normalization in _RLOSS_TYPES:
            # -2 c W S times the incoming gradient in one pass. W S is this graph's own tensor,
            # read by nothing once this backward frees the graph: it becomes the gradient in
            # place (a fresh [B, K, N] result over 32 MB page-faults in full: 32 ms against
            # 3 ms in place at 512², B=4, K=21). Kept when the graph is (retain_graph).
            factor = grad_value * (-2.0 * rloss_scale(ctx.normalization))
            factor = factor.reshape((-1,) + (1,) * (ws.ndim - 1))
            grad = ws.mul_(factor) if _graph_freed_after_backward() else ws * factor
            return grad, None, None, None
        grad = crf_grad(ws, degree, mass, ctx.normalization)
        return broadcast_grad(grad_value, grad), None, None, None


def dense_crf_loss(
    images: Tensor,
    probs: Tensor,
    valid_mask: Tensor | None = None,
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    scale_factor: float = 1.0,
    spacing: Sequence[float] | None = None,
    normalization: DenseCRFNormalization = "affinity",
    backend: Backend = "lattice",
    affinity: GaussianAffinity | None = None,
) -> Tensor:
    r"""Dense CRF loss: the relaxed Potts energy of the soft segmentation, eq. (4).

    .. math::
        R_{CRF}(S) = \sum_k S_k^\top W (\mathbf{1} - S_k), \qquad
        W_{pq} = \exp\Big(-\frac{|x_p - x_q|^2}{2\sigma_{xy}^2}
                          - \frac{|I_p - I_q|^2}{2\sigma_{rgb}^2}\Big)

    ``W`` is the dense Gaussian over positions and intensities, self term included. Pixels where
    ``valid_mask`` is False are removed from the graph: their probabilities are replaced by 0 in
    ``S`` and their entry of ``1`` by 0 (so they count neither in ``S'W(1 - S)`` nor in
    ``1'W1``), i.e. the loss is that of the subgraph of valid pixels, and their gradient is 0.

    Normalizations (each the mean over the batch of a per-image value; B = batch size):

    - ``"affinity"`` (default): :math:`R_{CRF} / \mathbf{1}^\top W \mathbf{1}`, the fraction of
      affinity mass that the segmentation cuts: >= 0, 0 for a hard segmentation that cuts no
      affinity, at most :math:`1 - 1/K` (uniform probabilities). Weights of order 1 are sensible.
    - ``"none"``: :math:`R_{CRF}` itself, in :math:`[0, (1 - 1/K)\,\mathbf{1}^\top W\mathbf{1}]`;
      grows like N times the number of neighbours within ``sigma_xy``.
    - ``"rloss"``: the original rloss code's value :math:`-\sum_k S_k^\top W S_k / B`. It drops
      the constant :math:`\mathbf{1}^\top W \mathbf{1}` (same gradient through a softmax) and is
      therefore always <= 0, of magnitude up to :math:`\mathbf{1}^\top W \mathbf{1}` (about
      1e9-1e10 for a 321x321 image at ``sigma_xy=80``): that is why its published weights are
      tiny (2e-9). Our ``W`` matches the exact Gaussian sum while the original's filter
      returns about 0.56 of it, so such a weight regularizes ~1.8x harder here than there.
    - ``"rloss_original"``: ``"rloss"`` times ``RLOSS_ORIGINAL_SCALE`` (0.565, the measured
      ratio of the original's loss to ours, 0.545-0.585 over 321² / 512², batch 1 / 4, K = 21,
      RGBXY 15 / 100 on photos): the original's published weights mean what they meant.

    The gradient is computed in closed form, :math:`\partial R / \partial S_k = W\mathbf{1} -
    2 W S_k` (eq. (11) plus the term that the softmax cancels), from the ``W S`` of the forward
    pass: the lattice is built and applied once. No gradient flows into ``images``. Under
    autocast the loss is computed in float32.

    Args:
        images: Tensor[B, C, H, W] or Tensor[B, C, D, H, W], intensities in 0-255 (RGB, gray or
            any number of channels; float or uint8). Not network-normalized.
        probs: Tensor[B, K, *spatial], softmax probabilities (sum to 1 over K).
        valid_mask: Tensor[B, *spatial] bool, False at pixels to exclude (e.g. padding).
        sigma_rgb: intensity bandwidth, in 0-255 units, for every image channel.
        sigma_xy: spatial bandwidth in pixels (in the units of ``spacing`` if given).
        scale_factor: resize image and mask (nearest) and probs (bilinear) by this factor before
            the loss, with ``sigma_xy`` multiplied by it, as the original code does.
        spacing: physical size of a pixel/voxel along each spatial axis (3D volumes).
        normalization: ``"affinity"``, ``"none"``, ``"rloss"`` or ``"rloss_original"``, see
            above.
        backend: ``"lattice"`` (permutohedral lattice, O(N)) or ``"exact"`` (O(N^2) reference).
        affinity: a prebuilt :class:`~weakseg.losses.GaussianAffinity` of these images (same
            ``scale_factor``), reused instead of building one; its bandwidths, ``spacing`` and
            backend then replace ``sigma_rgb``, ``sigma_xy``, ``spacing`` and ``backend``.

    Returns:
        Tensor[] (scalar) in the dtype of computation (float32, or float64 for float64 probs).

    Raises:
        ValueError: ``probs`` negative (below -1e-2), non-finite or not summing to 1 over K
            (within 1e-2) at a valid pixel; ``images`` outside [-0.5, 255.5] (half a grey level
            of slack; rescale other ranges) or non-finite; any shape, size or device mismatch
            (each named in the message); an unknown ``normalization`` or ``backend``.
        TypeError: a non-tensor input, integer ``probs``, a non-bool ``valid_mask``.

    Warns:
        UserWarning: when float ``images`` lie within [0, 1], the usual sign of images that
        were divided by 255 (the colour term then barely matters at ``sigma_rgb=15``).

    Example:
        >>> images = torch.rand(2, 3, 32, 32) * 255
        >>> probs = torch.randn(2, 4, 32, 32).softmax(dim=1)
        >>> loss = dense_crf_loss(images, probs)
        >>> bool(0 <= loss <= 1 - 1 / 4)
        True
    """
    sigma_rgb, sigma_xy = check_dense_arguments(images, probs, backend, sigma_rgb, sigma_xy)
    check_choice("normalization", normalization, DENSE_CRF_NORMALIZATIONS)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        _, segmentation, mask, weights = dense_inputs(
            images, probs, valid_mask, affinity, sigma_rgb, sigma_xy, scale_factor, spacing, backend
        )
        return _DenseCRFFunction.apply(segmentation, mask, weights, normalization).mean()


class DenseCRFLoss(WeightedLoss):
    """``weight * dense_crf_loss(images, probs, valid_mask, affinity=None, ...)``; see
    :func:`dense_crf_loss`.

    Example:
        >>> criterion = DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=80.0)
        >>> images = torch.rand(1, 3, 32, 32) * 255
        >>> criterion(images, torch.full((1, 2, 32, 32), 0.5)).shape
        torch.Size([])
    """

    function = staticmethod(dense_crf_loss)
    call_arguments = ("affinity",)
    checks = own_checks(normalization=choice(DENSE_CRF_NORMALIZATIONS))
