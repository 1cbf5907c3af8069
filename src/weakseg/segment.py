"""Deprecated location: the interactive segmentation lives in :mod:`weakseg.interactive`.

Kept only while ``weakseg/__init__.py`` and ``weakseg/viz/gradients.py`` still import from here.
"""

from weakseg.interactive.logit_field import (
    SEGMENT_INITS,
    SEGMENT_LOSSES,
    nearest_scribble_labels,
)
from weakseg.interactive.logit_field import logit_field_segmentation as segment_image

__all__ = ["SEGMENT_INITS", "SEGMENT_LOSSES", "nearest_scribble_labels", "segment_image"]
