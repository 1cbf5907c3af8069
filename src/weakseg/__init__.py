"""weakseg: weakly-supervised semantic segmentation with regularized losses.

Partial cross-entropy on the few labeled pixels plus a relaxed shallow segmentation energy
(dense CRF, normalized cut, kernel cut, grid Potts) on all pixels, after Tang et al.,
"On Regularized Losses for Weakly-supervised CNN Segmentation" (ECCV 2018).
"""

from weakseg.segment import segment_image

__version__ = "0.1.0.dev0"
__all__ = ["__version__", "segment_image"]
