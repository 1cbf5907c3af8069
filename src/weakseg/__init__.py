"""weakseg: weakly-supervised semantic segmentation with regularized losses.

Partial cross-entropy on the few labeled pixels plus a relaxed shallow segmentation energy
(dense CRF, normalized cut, kernel cut, grid Potts) on all pixels, after Tang et al.,
"On Regularized Losses for Weakly-supervised CNN Segmentation" (ECCV 2018).

Importing ``weakseg`` (or one of its subpackages, e.g. ``weakseg.filtering``) loads nothing
else: :func:`segment_image` is looked up in :mod:`weakseg.interactive` on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0.dev0"
__all__ = ["__version__", "segment_image"]


def __getattr__(name: str) -> Any:
    if name == "segment_image":
        from weakseg.interactive import segment_image

        return segment_image
    raise AttributeError(f"module 'weakseg' has no attribute {name!r}")
