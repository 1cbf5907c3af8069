"""Training, evaluation and prediction: the recipe behind ``weakseg train | eval | predict``.

- :mod:`weakseg.engine.train`: ``train`` = ``build`` -> ``resume`` -> ``fit`` with hooks
  (loss = the :class:`~weakseg.losses.Objective` of ``config.losses``), checkpoints, torchrun
  (import the module: ``from weakseg.engine.train import train``).
- :mod:`weakseg.engine.evaluate`: multi-scale / flip / dense-CRF inference and ``evaluate``.
- :mod:`weakseg.engine.metrics`: confusion matrix, IoU, mIoU, pixel accuracy, Dice.
- :mod:`weakseg.engine.checkpoint`: atomic checkpoints and RNG states.
- :mod:`weakseg.engine.config`: :class:`TrainConfig` from YAML and ``--set key=value``.
- :mod:`weakseg.engine.device`: the one device resolver (``auto``, ``cpu``, ``cuda:N``).
- :mod:`weakseg.engine.predict`: model from a checkpoint, palette masks and overlays.

The names below are imported from their modules on first use (importing ``weakseg.engine.config``
does not load torch).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of weakseg.engine that defines it
_NAMES: dict[str, str] = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ConfigError": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "evaluate": "evaluate",
    "predict_probs": "evaluate",
    "ConfusionMatrix": "metrics",
    "confusion_matrix": "metrics",
    "dice_per_class": "metrics",
    "iou_per_class": "metrics",
    "mean_dice": "metrics",
    "mean_iou": "metrics",
    "pixel_accuracy": "metrics",
    "summarize": "metrics",
    "load_trained_model": "predict",
    "TrainingInterrupted": "train",
    "compute_loss": "train",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"weakseg.engine.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'weakseg.engine' has no attribute {name!r}")
