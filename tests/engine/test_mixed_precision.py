"""Mixed precision of a training step: bfloat16 autocast on the CPU with ``amp_cpu``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weakseg.engine.config import load_config
from weakseg.engine.train import train_step
from weakseg.losses import GridPottsLoss
from weakseg.models import build_model


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image_raw = torch.rand(2, 1, 32, 32, generator=generator) * 255
    label = torch.full((2, 32, 32), 255)
    label[:, 4:8, 4:8] = 0
    label[:, 20:24, 20:24] = 1
    return {
        "image": (image_raw - 127.5) / 63.75,
        "image_raw": image_raw,
        "label": label,
        "valid_mask": torch.ones(2, 32, 32, dtype=torch.bool),
    }


def _step(model: nn.Module, *overrides: str) -> tuple[dict[str, float], list[torch.dtype]]:
    """One SGD step; returns the logged terms and the dtypes of the first convolution's output."""
    config = load_config(None, ["optimizer=sgd", "lr=0.1", *overrides])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dtypes: list[torch.dtype] = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    objective = {"grid_potts": GridPottsLoss(weight=0.5)}
    terms = train_step(model, [_batch()], objective, optimizer, scaler, config, torch.device("cpu"))
    hook.remove()
    return terms, dtypes


def test_amp_cpu_runs_the_network_in_bfloat16_and_the_rest_in_float32() -> None:
    torch.manual_seed(0)
    reference = build_model("unet", 2, in_channels=1, options={"base_channels": 4, "depth": 2})
    mixed = copy.deepcopy(reference)
    terms_fp32, dtypes_fp32 = _step(reference)
    terms_bf16, dtypes_bf16 = _step(mixed, "amp_cpu=true")
    assert dtypes_fp32 == [torch.float32]
    assert dtypes_bf16 == [torch.bfloat16]
    # the weights and their optimizer step stay float32; the step lands near float32's
    for weight, weight_bf16 in zip(reference.parameters(), mixed.parameters(), strict=True):
        assert weight_bf16.dtype == torch.float32
        torch.testing.assert_close(weight_bf16, weight, atol=0.02, rtol=0.02)
    assert terms_bf16["loss"] == pytest.approx(terms_fp32["loss"], rel=0.02)
    assert terms_bf16["pce"] != terms_fp32["pce"]  # bfloat16 did round something


def test_amp_cpu_must_be_a_boolean() -> None:
    from weakseg.engine.config import ConfigError

    with pytest.raises(ConfigError, match="'amp_cpu' must be true or false"):
        load_config(None, ["amp_cpu=yes please"])
