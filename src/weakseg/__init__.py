"""weakseg: weakly-supervised semantic segmentation with regularized losses.

Partial cross-entropy on the few labeled pixels plus a relaxed shallow segmentation energy
(dense CRF, normalized cut, kernel cut, grid Potts) on all pixels, after Tang et al.,
"On Regularized Losses for Weakly-supervised CNN Segmentation" (ECCV 2018).
"""

import os
import sys

# PyTorch's OpenMP threads busy-wait after every parallel operation; the numba lattice backend's
# threads then fight them for the cores (measured: filtering 1.3-2x slower on 2 cores). Passive
# waiting frees the cores. It only takes effect before PyTorch starts, so it is set only when
# weakseg is imported first, and a value chosen by the user always wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from weakseg.segment import segment_image

__version__ = "0.1.0.dev0"
__all__ = ["__version__", "segment_image"]
