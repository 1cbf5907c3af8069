"""Figures drawn with PIL: the regularizers' gradients (the paper's Fig. 1) and loss curves.

- :mod:`weakseg.viz.gradients`: dR/dS_k of each regularizer at a segmentation S, for any image
  (``weakseg viz gradients``).
- :mod:`weakseg.viz.curves`: the loss terms of training runs over the iterations
  (``weakseg viz curves``).
- :mod:`weakseg.viz.render`: the shared drawing helpers (class colours, panels, legends).
"""

from weakseg.viz.curves import LossLog, read_loss_log, render_curves, run_labels
from weakseg.viz.gradients import (
    gradient_regularizers,
    network_probs,
    regularizer_gradients,
    render_gradient_figure,
    scribble_probs,
)

__all__ = [
    "LossLog",
    "gradient_regularizers",
    "network_probs",
    "read_loss_log",
    "regularizer_gradients",
    "render_curves",
    "render_gradient_figure",
    "run_labels",
    "scribble_probs",
]
