r"""The five numbers of the fully connected CRF's two Gaussian kernels, as one object.

The appearance (bilateral) kernel :math:`w^{(1)} \exp(-|p-q|^2 / 2\theta_\alpha^2 - |I_p -
I_q|^2 / 2\theta_\beta^2)` and the smoothness kernel :math:`w^{(2)} \exp(-|p-q|^2 /
2\theta_\gamma^2)` of :func:`~weakseg.crf.dense_crf_inference`, :class:`~weakseg.crf.CRFasRNN`,
SEC's constrain-to-boundary loss and DenseCRF-ADM. The defaults are DeepLab's post-processing
CRF (weights 4 and 3, stds 49 px, 5 grey levels and 3 px).
"""

from __future__ import annotations

from typing import NamedTuple

from weakseg._validation import check_choice, check_nonnegative, check_positive

__all__ = ["BACKENDS", "NORMALIZATIONS", "KernelParams", "check_kernel_parameters"]

# How the Gaussian filter is computed: the permutohedral lattice (O(N D)) or the exact O(N^2) sum.
BACKENDS: tuple[str, ...] = ("lattice", "exact")
# Kernel normalization of the mean-field messages (pydensecrf's NORMALIZE_SYMMETRIC, or none).
NORMALIZATIONS: tuple[str, ...] = ("symmetric", "none")


class KernelParams(NamedTuple):
    """Weights (>= 0) and bandwidths (> 0) of the appearance and smoothness kernels.

    A tuple: ``w_b, t_a, t_b, w_g, t_g = params`` unpacks it; :meth:`checked` validates it.

    Example:
        >>> KernelParams(w_bilateral=10.0).checked().w_bilateral
        10.0
    """

    w_bilateral: float = 4.0
    theta_alpha: float = 49.0
    theta_beta: float = 5.0
    w_gaussian: float = 3.0
    theta_gamma: float = 3.0

    def checked(self) -> KernelParams:
        """The same parameters as floats; ValueError / TypeError naming a bad one."""
        return KernelParams(
            check_nonnegative("w_bilateral", self.w_bilateral),
            check_positive("theta_alpha", self.theta_alpha),
            check_positive("theta_beta", self.theta_beta),
            check_nonnegative("w_gaussian", self.w_gaussian),
            check_positive("theta_gamma", self.theta_gamma),
        )


def check_kernel_parameters(
    w_bilateral: float,
    theta_alpha: float,
    theta_beta: float,
    w_gaussian: float,
    theta_gamma: float,
    normalization: str,
    backend: str,
) -> KernelParams:
    """Validate the kernel hyper-parameters and the two choices; return the checked numbers."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("backend", backend, BACKENDS)
    return KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma).checked()
