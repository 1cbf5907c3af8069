r"""CRF-as-RNN (Zheng et al., ICCV 2015): mean-field inference unrolled as a trainable layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from weakseg._validation import check_logits_and_images, check_n_iter
from weakseg.crf._kernels import build_kernels
from weakseg.crf.kernel_params import KernelParams, check_kernel_parameters

__all__ = ["CRFasRNN"]


class CRFasRNN(nn.Module):
    r"""Trainable dense CRF layer: ``n_iter`` unrolled mean-field steps with learnable weights.

    Each step computes, as in Zheng et al. (2015),

    .. math::
        Q \leftarrow \mathrm{softmax}\Big(\mathrm{logits} - \mu \big(W_{\alpha}\, m_{\alpha}(Q)
            + W_{\gamma}\, m_{\gamma}(Q)\big)\Big)

    where :math:`m_\alpha, m_\gamma` are the self-excluded messages of the appearance and
    smoothness kernels (see :func:`~weakseg.crf.dense_crf_inference`), :math:`W_\alpha,
    W_\gamma` are learnable K x K filter-weight matrices (initialised to ``w_bilateral * I`` and
    ``w_gaussian * I``) and :math:`\mu` is the learnable K x K compatibility (initialised to
    Potts ``1 - I``). The bandwidths stay fixed. Gradients flow through every iteration to the
    logits and to the three matrices; the Gaussian filters are built once per forward and reused
    by all iterations (backward reuses them too).

    Args:
        num_classes: K.
        n_iter: unrolled iterations (Zheng et al. train with 5 and test with 10).
        w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma: initial weights and
            fixed bandwidths, as in :func:`~weakseg.crf.dense_crf_inference`.
        normalization, spacing, backend: as in :func:`~weakseg.crf.dense_crf_inference`.

    Shape:
        - logits: Tensor[B, K, *spatial] (2D or 3D); images: Tensor[B, C, *spatial].
        - output: Tensor[B, K, *spatial], probabilities.

    :class:`~weakseg.models.CRFLayerModel` puts it after a segmentation network (the
    ``crf_layer`` setting of ``weakseg train``, Table 4).

    Example:
        >>> layer = CRFasRNN(num_classes=3, n_iter=2, backend="exact")
        >>> q = layer(torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8) * 255)
        >>> q.sum().backward()  # gradients reach layer.compat and the kernel weights
    """

    def __init__(
        self,
        num_classes: int,
        *,
        n_iter: int = 5,
        w_bilateral: float = 4.0,
        theta_alpha: float = 49.0,
        theta_beta: float = 5.0,
        w_gaussian: float = 3.0,
        theta_gamma: float = 3.0,
        normalization: str = "symmetric",
        spacing: Sequence[float] | None = None,
        backend: str = "lattice",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        check_n_iter(n_iter)
        w_b, t_a, t_b, w_g, t_g = check_kernel_parameters(
            w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, normalization, backend
        )
        self.num_classes = num_classes
        self.n_iter = n_iter
        self.theta_alpha, self.theta_beta, self.theta_gamma = t_a, t_b, t_g
        self.normalization = normalization
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.backend = backend
        eye = torch.eye(num_classes)
        self.bilateral_weight = nn.Parameter(w_b * eye)
        self.gaussian_weight = nn.Parameter(w_g * eye)
        self.compat = nn.Parameter(1.0 - eye)

    def forward(self, logits: Tensor, images: Tensor) -> Tensor:
        """``logits [B, K, *spatial]``, ``images [B, C, *spatial]`` -> Q ``[B, K, *spatial]``."""
        check_logits_and_images(logits, images)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have num_classes={self.num_classes} channels, got shape "
                f"{tuple(logits.shape)}"
            )
        # Weight 1 placeholders: both kernels are always built, their learnable weights apply
        # below (a weight initialised to 0 may become non-zero during training).
        kernels = build_kernels(
            images.detach().to(logits.dtype),
            KernelParams(1.0, self.theta_alpha, self.theta_beta, 1.0, self.theta_gamma),
            normalization=self.normalization,
            spacing=self.spacing,
            backend=self.backend,
        )
        (_, bilateral), (_, smoothness) = kernels
        weights = [self.bilateral_weight.to(logits), self.gaussian_weight.to(logits)]
        compat = self.compat.to(logits)
        mixing = [compat @ w for w in weights]  # (K, K) each: compatibility after weighting
        q = torch.softmax(logits, dim=1)
        for _ in range(self.n_iter):
            pairwise = torch.einsum("kl,bl...->bk...", mixing[0], bilateral(q))
            pairwise = pairwise + torch.einsum("kl,bl...->bk...", mixing[1], smoothness(q))
            q = torch.softmax(logits - pairwise, dim=1)
        return q

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, n_iter={self.n_iter}, "
            f"theta_alpha={self.theta_alpha}, theta_beta={self.theta_beta}, "
            f"theta_gamma={self.theta_gamma}, normalization={self.normalization!r}, "
            f"backend={self.backend!r}"
            + ("" if self.spacing is None else f", spacing={self.spacing}")
        )
