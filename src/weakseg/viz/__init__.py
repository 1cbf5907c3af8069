"""Figures drawn with PIL: the regularizers' gradients (the paper's Fig. 1) and loss curves.

- :mod:`weakseg.viz.gradients`: dR/dS_k of each regularizer at a segmentation S, for any image
  (``weakseg viz gradients``).
- :mod:`weakseg.viz.curves`: the loss terms of training runs over the iterations
  (``weakseg viz curves``).
- :mod:`weakseg.viz.render`: the shared drawing helpers (class colours, panels, legends).
"""

from __future__ import annotations

import importlib
from typing import Any

# The regularizers ``weakseg viz gradients`` can draw (plain data: the CLI reads it without torch).
GRADIENT_LOSSES: tuple[str, ...] = ("dense_crf", "normalized_cut", "kernel_cut", "grid_potts")

# public name -> its module in weakseg.viz, imported on first use
_NAMES: dict[str, str] = {
    "LossLog": "curves",
    "read_loss_log": "curves",
    "render_curves": "curves",
    "run_labels": "curves",
    "gradient_regularizers": "gradients",
    "network_probs": "gradients",
    "regularizer_gradients": "gradients",
    "render_gradient_figure": "gradients",
    "scribble_probs": "gradients",
}
__all__ = ["GRADIENT_LOSSES", *sorted(_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"weakseg.viz.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'weakseg.viz' has no attribute {name!r}")
