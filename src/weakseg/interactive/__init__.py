"""Interactive segmentation of one image (or volume) from its scribbles, without a network.

- :func:`segment_image` (the default of ``weakseg segment``): per-class appearance models
  learned from the scribbles, a distance-to-scribble term and the dense CRF, by coarse-to-fine
  mean field on the permutohedral lattice, with a few re-estimations of the appearance
  (:mod:`weakseg.interactive.appearance_crf`). NumPy in, NumPy out (tensors accepted); it
  does not import PyTorch.
- :class:`InteractiveSegmenter`: the same method for an annotation loop: ``segment`` once,
  then ``refine`` after each round of strokes, reusing what depends on the image alone.
- :func:`logit_field_segmentation`: the earlier method, gradient descent on a free logit field,
  partial cross-entropy + a regularized loss (dense CRF, normalized / kernel cut, grid Potts).
- :func:`nearest_scribble_labels`: the class of the nearest scribbled pixel.

Names resolve lazily, so that importing this package costs neither PyTorch nor SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "segment_image": "weakseg.interactive.appearance_crf",
    "InteractiveSegmenter": "weakseg.interactive.appearance_crf",
    "check_scribbles": "weakseg.interactive.appearance_crf",
    "class_distances": "weakseg.interactive.distance",
    "HistogramModels": "weakseg.interactive.appearance",
    "SEGMENT_INITS": "weakseg.interactive.logit_field",
    "SEGMENT_LOSSES": "weakseg.interactive.logit_field",
    "logit_field_segmentation": "weakseg.interactive.logit_field",
    "nearest_scribble_labels": "weakseg.interactive.logit_field",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'weakseg.interactive' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
