r"""SEC's constrain-to-boundary loss: KL divergence between S and its dense CRF refinement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weakseg._validation import check_same_device, check_valid_mask
from weakseg.crf import dense_crf_inference
from weakseg.crf.kernel_params import NORMALIZATIONS as CRF_NORMALIZATIONS
from weakseg.crf.kernel_params import KernelParams
from weakseg.losses._affinity import check_images, check_probs
from weakseg.losses._module import WeightedLoss, choice, own_checks
from weakseg.losses._sec_common import compute_dtype, safe_log

__all__ = ["ConstrainToBoundaryLoss", "constrain_to_boundary_loss", "resize_images"]


# SEC's constrain-to-boundary CRF: the Krähenbühl & Koltun defaults of its CRF wrapper (bilateral
# weight 10, xy std 80, colour std 13; Gaussian weight 3, xy std 3; 10 iterations) with the
# spatial stds divided by 12 because the CRF runs on the 41x41 score map of a 321x321 input.
SEC_CRF_SCALE = 12.0
SEC_N_ITER = 10
SEC_W_BILATERAL = 10.0
SEC_THETA_ALPHA = 80.0 / SEC_CRF_SCALE
SEC_THETA_BETA = 13.0
SEC_W_GAUSSIAN = 3.0
SEC_THETA_GAMMA = 3.0 / SEC_CRF_SCALE


def resize_images(images: Tensor, probs: Tensor) -> Tensor:
    """Images at the spatial size of ``probs`` (bilinear, as SEC does for its CRF layer)."""
    check_images(images)
    if images.shape[0] != probs.shape[0]:
        raise ValueError(
            f"batch size mismatch: probs has {probs.shape[0]} (shape {tuple(probs.shape)}), "
            f"images has {images.shape[0]} (shape {tuple(images.shape)})"
        )
    if images.ndim != probs.ndim:
        raise ValueError(
            f"images must have as many spatial dims as probs: images has shape "
            f"{tuple(images.shape)}, probs {tuple(probs.shape)}"
        )
    check_same_device("images", images, "probs", probs)
    images = images.detach().to(compute_dtype(probs))
    if images.shape[2:] == probs.shape[2:]:
        return images
    mode = "bilinear" if probs.ndim == 4 else "trilinear"
    return F.interpolate(images, size=probs.shape[2:], mode=mode, align_corners=False)


def constrain_to_boundary_loss(
    probs: Tensor,
    images: Tensor,
    valid_mask: Tensor | None = None,
    *,
    n_iter: int = SEC_N_ITER,
    w_bilateral: float = SEC_W_BILATERAL,
    theta_alpha: float = SEC_THETA_ALPHA,
    theta_beta: float = SEC_THETA_BETA,
    w_gaussian: float = SEC_W_GAUSSIAN,
    theta_gamma: float = SEC_THETA_GAMMA,
    normalization: str = "symmetric",
    backend: str = "lattice",
    backprop_crf: bool = False,
) -> Tensor:
    r"""Constrain-to-boundary loss: KL divergence from the dense CRF refinement of S to S.

    .. math::
        Q = \mathrm{MF}\big(\log S, I\big), \qquad
        L_{constrain} = \frac{1}{B} \sum_b \frac{1}{|\Omega_b|} \sum_{p \in \Omega_b}
                        \sum_k Q_{pk} \log \frac{Q_{pk}}{S_{pk}}

    where :math:`\mathrm{MF}` is mean-field inference of the fully connected CRF
    (:func:`~weakseg.crf.dense_crf_inference`) with unaries :math:`-\log S` (log-probabilities
    passed as logits) and :math:`\Omega_b` the valid pixels of image ``b``. By default no
    gradient flows through :math:`Q` (``backprop_crf=False``, the ``*`` variant of Table 3 and
    the DenseCRF-ADM view of Sec. 3): the gradient is :math:`-Q / (S\,|\Omega_b| B)`.
    ``backprop_crf=True`` also differentiates through the mean-field iterations.

    The CRF runs at the resolution of ``probs``: ``images`` at another size are resized to it
    (bilinear, as SEC's CRF layer does), and the spatial stds are in pixels of ``probs``. The
    defaults are SEC's: the Krähenbühl-Koltun parameters (bilateral weight 10, xy std 80,
    colour std 13; Gaussian weight 3, xy std 3; 10 iterations) with the xy stds divided by 12
    for the 41x41 score map of a 321x321 crop. SEC additionally clips :math:`Q/S` to
    [0.05, 20] in its code; this is the plain KL of its paper.

    Args:
        probs: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], softmax probabilities.
        images: Tensor[B, C, *spatial'], 0-255 intensities (RGB, gray or any channels), at the
            resolution of ``probs`` or any other (resized).
        valid_mask: optional bool Tensor[B, *spatial] (spatial of ``probs``); padding is left
            out of the CRF and of the average.
        n_iter, w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, normalization,
            backend: as in :func:`~weakseg.crf.dense_crf_inference`.
        backprop_crf: differentiate through the mean-field output too.

    Returns:
        Tensor[] (scalar) >= 0, float32 (float64 for float64 ``probs``).

    Raises:
        ValueError / TypeError: as :func:`~weakseg.crf.dense_crf_inference` for the CRF
            parameters; ``probs`` not probabilities; batch, dims or device mismatch between
            ``probs`` and ``images``; a ``valid_mask`` of the wrong shape or dtype.

    Example:
        >>> probs = torch.randn(1, 3, 8, 8).softmax(dim=1).requires_grad_()
        >>> loss = constrain_to_boundary_loss(probs, torch.rand(1, 3, 8, 8) * 255,
        ...                                   backend="exact")
        >>> loss.backward()
    """
    check_probs(probs, check_valid_mask(valid_mask, probs))
    images = resize_images(images, probs)
    probs = probs.to(compute_dtype(probs))
    if valid_mask is not None:
        # Padding may hold anything (even NaN); uniform there keeps the CRF input finite, and
        # those pixels neither send messages nor enter the average.
        probs = torch.where(valid_mask.unsqueeze(1), probs, 1.0 / probs.shape[1])
    log_probs = safe_log(probs)
    with torch.set_grad_enabled(backprop_crf and torch.is_grad_enabled()):
        refined = dense_crf_inference(
            log_probs if backprop_crf else log_probs.detach(),
            images,
            n_iter=n_iter,
            **KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma)._asdict(),
            normalization=normalization,
            backend=backend,
            valid_mask=valid_mask,
        )  # (B, K, *spatial)
    kl = (torch.xlogy(refined, refined) - refined * log_probs).sum(dim=1)  # (B, *spatial)
    if valid_mask is None:
        return kl.flatten(1).mean(dim=1).mean()
    kl = torch.where(valid_mask, kl, 0)
    count = valid_mask.flatten(1).sum(dim=1).clamp_min(1).to(kl.dtype)
    return (kl.flatten(1).sum(dim=1) / count).mean()


class ConstrainToBoundaryLoss(WeightedLoss):
    """``weight * constrain_to_boundary_loss(probs, images, valid_mask, ...)``; see
    :func:`constrain_to_boundary_loss`."""

    function = staticmethod(constrain_to_boundary_loss)
    checks = own_checks(normalization=choice(CRF_NORMALIZATIONS))
