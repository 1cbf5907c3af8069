"""Dense CRF inference on the filtering engine: post-processing, proposals, CRF-as-RNN.

- :func:`dense_crf_inference` / :class:`DenseCRF`: mean-field inference for the fully connected
  CRF of Krähenbühl & Koltun (2011), DeepLab's post-processing.
- :func:`mean_field_energy`: the free energy mean field decreases (for tests and diagnostics).
- :class:`CRFasRNN`: the trainable unrolled mean-field layer of Zheng et al. (2015).
- :class:`KernelParams`: the weights and bandwidths of the two Gaussian kernels.
"""

from weakseg.crf.crf_as_rnn import CRFasRNN
from weakseg.crf.kernel_params import KernelParams, check_kernel_parameters
from weakseg.crf.mean_field import DenseCRF, dense_crf_inference, mean_field_energy

__all__ = [
    "CRFasRNN",
    "DenseCRF",
    "KernelParams",
    "check_kernel_parameters",
    "dense_crf_inference",
    "mean_field_energy",
]
