"""TensorBoard logging of ``weakseg train``: every loss term, the LR, validation mIoU / Dice and
the image panels land in the event file (skipped when the tensorboard package is absent)."""

from __future__ import annotations

import pytest

from weakseg.engine.config import load_config
from weakseg.engine.train import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_scalars_and_images(tmp_path) -> None:
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            "synthetic_train=4",
            "synthetic_val=2",
            "synthetic_size=32",
            "crop_size=32",
            "batch_size=2",
            "num_workers=0",
            "progress=false",
            "tensorboard=true",
            "log_every=1",
            "epochs=2",
            "losses={grid_potts: {weight: 0.1}}",
        ],
    )
    train(config)
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = event_accumulator.EventAccumulator(
        str(events[0].parent), size_guidance={event_accumulator.IMAGES: 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    expected = {"train/pce", "train/grid_potts", "train/loss", "train/lr"}
    expected |= {"val/miou", "val/mean_dice"}
    assert expected <= set(tags["scalars"])
    # 2 epochs of 2 steps, a scalar per step; validation after each epoch
    assert [e.step for e in accumulator.Scalars("train/pce")] == [1, 2, 3, 4]
    assert [e.step for e in accumulator.Scalars("val/miou")] == [2, 4]
    lrs = [e.value for e in accumulator.Scalars("train/lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0  # poly decay to 0
    assert tags["images"], "image, scribbles and prediction panels are logged"
    image = accumulator.Images(tags["images"][0])[-1]
    assert image.width >= 32 and image.height >= 32
