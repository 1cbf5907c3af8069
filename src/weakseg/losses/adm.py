r"""DenseCRF-ADM: online dense CRF proposals, Sec. 3 and Table 2 of Tang et al. (ECCV 2018).

Per batch, the proposal step (eqs. (8)-(9)) runs mean-field inference with the network output
:math:`S = \mathrm{softmax}(\mathrm{logits})` as unary (:math:`-\log S`) and the scribbles
clamped, giving :math:`X`; no gradient flows through :math:`X`. The network step (eq. (7))
then minimizes

.. math::
    \frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} H(Y_p, S_p)
    + \frac{1}{|\Omega_U|} \sum_{p \in \Omega_U} H(X_p, S_p),
    \qquad H(X_p, S_p) = -\sum_k X_p^k \log S_p^k .

For comparing ADM with gradient descent (Fig. 3) it also reports the dense CRF loss of S,
:math:`R(S) = \sum_k S_k^\top W (\mathbf 1 - S_k) / \mathbf 1^\top W \mathbf 1` with the
Gaussian affinity over :math:`[x/\sigma_{xy}, y/\sigma_{xy}, I/\sigma_{rgb}]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from weakseg._validation import (
    check_labels,
    check_logits_and_images,
    check_positive,
    check_valid_mask,
)
from weakseg.crf import dense_crf_inference
from weakseg.crf.kernel_params import NORMALIZATIONS as CRF_NORMALIZATIONS
from weakseg.crf.kernel_params import KernelParams
from weakseg.losses._module import LossModule, choice, own_checks
from weakseg.losses.dense_crf import dense_crf_loss

__all__ = ["ADMLossOutput", "DenseCRFADMLoss", "densecrf_adm_loss"]


class ADMLossOutput(NamedTuple):
    """What :func:`densecrf_adm_loss` returns.

    Attributes:
        loss: scalar Tensor, pCE + proposal CE, differentiable w.r.t. the logits.
        proposals: Tensor[B, K, *spatial], the mean-field proposals X (no gradient).
        dense_crf_loss: scalar Tensor, batch mean of R(S) for the current S (no gradient).
    """

    loss: Tensor
    proposals: Tensor
    dense_crf_loss: Tensor


def densecrf_adm_loss(
    logits: Tensor,
    images: Tensor,
    scribbles: Tensor,
    *,
    n_iter: int = 5,
    w_bilateral: float = 4.0,
    theta_alpha: float = 49.0,
    theta_beta: float = 5.0,
    w_gaussian: float = 3.0,
    theta_gamma: float = 3.0,
    compat: Tensor | None = None,
    normalization: str = "symmetric",
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    ignore_index: int = 255,
    valid_mask: Tensor | None = None,
    spacing: Sequence[float] | None = None,
    backend: str = "lattice",
) -> ADMLossOutput:
    r"""DenseCRF-ADM loss: pCE on scribbles + CE between mean-field proposals and S elsewhere.

    The proposal CRF takes the arguments of :func:`~weakseg.crf.dense_crf_inference`
    (``n_iter``, kernel weights and bandwidths, ``compat``, ``normalization``); SEC's
    constrain-to-boundary setting, which the paper's DenseCRF-ADM reuses, is a DeepLab-style CRF
    of this kind. ``sigma_rgb`` and ``sigma_xy`` only define the reported dense CRF loss R(S)
    (the paper's 15 and 100).

    Args:
        logits: Tensor[B, K, *spatial], network output before softmax.
        images: Tensor[B, C, *spatial], float intensities (0-255 RGB or gray).
        scribbles: Tensor[B, *spatial], int class ids, ``ignore_index`` = unlabeled.
        valid_mask: optional bool Tensor[B, *spatial]; padding is left out of the CRF, of the
            proposal CE and of R(S).
        spacing: voxel spacing for volumes.
        backend: ``"lattice"`` or ``"exact"``.

    Returns:
        :class:`ADMLossOutput` ``(loss, proposals, dense_crf_loss)``. Either average is 0 when
        its pixel set is empty.

    Example:
        >>> logits = torch.randn(1, 2, 10, 10, requires_grad=True)
        >>> scribbles = torch.full((1, 10, 10), 255)
        >>> scribbles[0, 2, 2], scribbles[0, 7, 7] = 0, 1
        >>> out = densecrf_adm_loss(logits, torch.rand(1, 3, 10, 10) * 255, scribbles,
        ...                         backend="exact")
        >>> out.loss.backward()
    """
    sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
    sigma_xy = check_positive("sigma_xy", sigma_xy)
    check_logits_and_images(logits, images)
    check_labels(scribbles, logits, ignore_index, name="scribbles")
    with torch.no_grad():
        proposals = dense_crf_inference(
            logits.detach(),
            images,
            n_iter=n_iter,
            **KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma)._asdict(),
            compat=compat,
            normalization=normalization,
            spacing=spacing,
            backend=backend,
            labels=scribbles,
            ignore_index=ignore_index,
            valid_mask=valid_mask,
        )  # (B, K, *spatial), checks the remaining arguments
    if valid_mask is not None:
        check_valid_mask(valid_mask, logits, "logits")
        valid = valid_mask
    else:
        valid = torch.ones_like(scribbles, dtype=torch.bool)
    labeled = (scribbles != ignore_index) & valid  # (B, *spatial)
    unlabeled = (scribbles == ignore_index) & valid
    log_probs = torch.log_softmax(logits, dim=1)  # (B, K, *spatial)
    ids = torch.where(labeled, scribbles, torch.zeros_like(scribbles)).long()
    ce_labeled = -log_probs.gather(1, ids.unsqueeze(1)).squeeze(1)  # (B, *spatial)
    ce_proposal = -(proposals * log_probs).sum(dim=1)  # (B, *spatial)
    zero = log_probs.new_zeros(())
    pce = torch.where(labeled, ce_labeled, zero).sum() / labeled.sum().clamp_min(1)
    pce_u = torch.where(unlabeled, ce_proposal, zero).sum() / unlabeled.sum().clamp_min(1)
    with torch.no_grad():
        crf_value = dense_crf_loss(
            images.detach(),
            torch.softmax(logits.detach(), dim=1),
            valid,
            sigma_rgb=sigma_rgb,
            sigma_xy=sigma_xy,
            spacing=spacing,
            normalization="affinity",
            backend="lattice" if backend == "lattice" else "exact",
        )
    return ADMLossOutput(pce + pce_u, proposals, crf_value)


class DenseCRFADMLoss(LossModule):
    """Module form of :func:`densecrf_adm_loss`; stores its hyper-parameters (``compat`` as a
    buffer).

    ``forward(logits, images, scribbles, valid_mask=None) -> ADMLossOutput``.
    """

    function = staticmethod(densecrf_adm_loss)
    call_arguments = ("valid_mask",)
    checks = own_checks(normalization=choice(CRF_NORMALIZATIONS))

    def forward(
        self,
        logits: Tensor,
        images: Tensor,
        scribbles: Tensor,
        valid_mask: Tensor | None = None,
    ) -> ADMLossOutput:
        return densecrf_adm_loss(
            logits, images, scribbles, valid_mask=valid_mask, **self.arguments()
        )

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.arguments().items() if k != "compat" and v is not None}
        parts = [f"{k}={v!r}" for k, v in shown.items()]
        parts.append("compat=potts" if self.compat is None else "compat=matrix")
        return ", ".join(parts)
