"""Interactive segmentation of one image (or volume) from its scribbles, without a network.

- :func:`logit_field_segmentation`: gradient descent on a free logit field, partial
  cross-entropy + a regularized loss (dense CRF, normalized / kernel cut, grid Potts).
- :func:`nearest_scribble_labels`: the class of the nearest scribbled pixel.

``segment_image`` is the default method (an alias of :func:`logit_field_segmentation` until the
appearance + mean-field method lands).
"""

from weakseg.interactive.logit_field import (
    SEGMENT_INITS,
    SEGMENT_LOSSES,
    logit_field_segmentation,
    nearest_scribble_labels,
)

segment_image = logit_field_segmentation

__all__ = [
    "SEGMENT_INITS",
    "SEGMENT_LOSSES",
    "logit_field_segmentation",
    "nearest_scribble_labels",
    "segment_image",
]
