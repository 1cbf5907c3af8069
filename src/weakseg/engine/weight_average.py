"""An exponential moving average of a network's weights (``ema_decay`` in the config).

Short schedules end on noisy weights: with batch 8 the last steps, and above all the batch-norm
running statistics (which follow the last few batches), move a validation Dice by a few points
from one checkpoint to the next. The average of the weights along the trajectory (Polyak
averaging, as the mean teacher of Tarvainen & Valpola 2017 and the EMA of detection and
classification recipes) is smoother; with ``ema_decay`` set it is what validation measures
and what checkpoints store as ``model``, for ``weakseg eval`` and ``predict``.

After step ``t`` (1, 2, ...) every floating-point parameter and buffer ``a`` of the average
moves toward the trained one ``w``::

    a <- d_t a + (1 - d_t) w,    d_t = min(decay, (1 + t) / (10 + t))

The early decay ``(1 + t) / (10 + t)`` lets the average leave the random initialization within
the first steps; the half-life is ``ln 2 / (1 - decay)`` steps after that (decay 0.99: 69).
Integer buffers (batch norm's ``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightAverage", "average_decay"]


def average_decay(decay: float, step: int) -> float:
    """``d_t = min(decay, (1 + t) / (10 + t))``, the weight of the old average after step ``t``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The exponential moving average of ``network``'s parameters and buffers.

    Args:
        network: the trained network (not a DDP wrapper); the average starts as its copy.
        decay: ``d`` in ``(0, 1)``: the old average's weight per step once warmed up.

    Attributes:
        module: the averaged network (an ``eval()``-mode copy without gradients), to evaluate
            or save.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(network).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        """Move the average toward ``network``'s weights after optimizer step ``step`` (>= 1)."""
        weight = 1.0 - average_decay(self.decay, step)
        current = network.state_dict()
        for name, average in self.module.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), weight)
            else:
                average.copy_(current[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (the network's keys)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict` (a resumed run)."""
        self.module.load_state_dict(state)
