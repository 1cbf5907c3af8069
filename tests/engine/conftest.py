"""Fixtures of the training tests: a tiny synthetic training config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from weakseg.engine.config import TrainConfig, load_config


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., TrainConfig]:
    """``tiny_config(*overrides, root=tmp_path)``: 2 iterations of batch 2 on 4 synthetic 32 px
    images (2 for validation), output in ``root / "run"``, no workers, bar or TensorBoard."""

    def make(*overrides: str, root: Path = tmp_path) -> TrainConfig:
        return load_config(
            None,
            [
                f"output_dir={root / 'run'}",
                "synthetic_train=4",
                "synthetic_val=2",
                "synthetic_size=32",
                "crop_size=32",
                "batch_size=2",
                "max_iterations=2",
                "num_workers=0",
                "progress=false",
                "tensorboard=false",
                *overrides,
            ],
        )

    return make
