"""What the demo trains: its four runs and its sizes and schedule (plain data, no torch:
``weakseg demo --help`` reads the defaults from here)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["AFFINITY", "DEFAULT_THREADS", "DEMO_RUNS", "DemoRun", "DemoSettings"]

# The regularizers' bandwidths: colour differences of ~15 grey levels, objects of ~10-30 px.
#: The demo's CPU threads unless told otherwise (the README's numbers are those of 2 threads).
DEFAULT_THREADS = 2

AFFINITY = {"sigma_rgb": 15.0, "sigma_xy": 20.0, "normalization": "affinity"}


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One of the demo's trainings: a name (folder, JSON key), a label, supervision, losses."""

    name: str
    label: str
    supervision: str
    losses: dict[str, dict[str, Any]]


DEMO_RUNS: tuple[DemoRun, ...] = (
    DemoRun("pce", "pCE only", "scribbles", {}),
    DemoRun(
        "dense_crf", "pCE + dense CRF", "scribbles", {"dense_crf": {"weight": 1.0, **AFFINITY}}
    ),
    DemoRun(
        "kernel_cut",
        "pCE + kernel cut",
        "scribbles",
        {"kernel_cut": {"weight": 1.0, "gamma": 0.1, **AFFINITY}},
    ),
    DemoRun("full", "full masks", "full", {}),
)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes and schedule of the demo (the defaults: about 3-5 minutes on 2 CPU cores).

    Args:
        epochs: passes over the training images, per run.
        train_images, val_images: numbers of generated images.
        image_size: side of the images, px.
        batch_size: training batch size.
        lr: AdamW learning rate (poly decay to 0).
        seed: data, augmentation and initialization seed (the same for every run).
        band_width: width in px of the boundary band of the error measure.
        figure_examples: validation images shown in the figure.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    epochs: int = 8
    train_images: int = 200
    val_images: int = 50
    image_size: int = 64
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    band_width: int = 2
    figure_examples: int = 4
    device: str = "auto"

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        """A shortened demo for tests: 16 images of 32 px, 1 epoch (a few seconds)."""
        values: dict[str, Any] = {
            "epochs": 1,
            "train_images": 16,
            "val_images": 4,
            "image_size": 32,
            "batch_size": 4,
            "figure_examples": 2,
        }
        values.update(overrides)
        return cls(**values)
