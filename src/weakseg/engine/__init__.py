"""Training, evaluation and prediction: the recipe behind ``weakseg train | eval | predict``.

- :mod:`weakseg.engine.train`: ``get_args_parser`` -> ``main`` -> ``train`` ->
  ``train_one_epoch`` (loss = pCE + weighted regularizers), checkpoints, resume, torchrun
  (import the module: ``from weakseg.engine.train import train``).
- :mod:`weakseg.engine.evaluate`: multi-scale / flip / dense-CRF inference and ``evaluate``.
- :mod:`weakseg.engine.metrics`: confusion matrix, IoU, mIoU, pixel accuracy, Dice.
- :mod:`weakseg.engine.checkpoint`: atomic checkpoints and RNG states.
- :mod:`weakseg.engine.config`: :class:`TrainConfig` from YAML and ``--set key=value``.
- :mod:`weakseg.engine.predict`: model from a checkpoint, palette masks and overlays.
"""

from weakseg.engine.checkpoint import load_checkpoint, save_checkpoint
from weakseg.engine.config import ConfigError, TrainConfig, load_config
from weakseg.engine.evaluate import evaluate, predict_probs
from weakseg.engine.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    summarize,
)
from weakseg.engine.predict import load_trained_model
from weakseg.engine.train import TrainingInterrupted, compute_loss

__all__ = [
    "ConfigError",
    "ConfusionMatrix",
    "TrainConfig",
    "TrainingInterrupted",
    "compute_loss",
    "confusion_matrix",
    "dice_per_class",
    "evaluate",
    "iou_per_class",
    "load_checkpoint",
    "load_config",
    "load_trained_model",
    "mean_dice",
    "mean_iou",
    "pixel_accuracy",
    "predict_probs",
    "save_checkpoint",
    "summarize",
]
