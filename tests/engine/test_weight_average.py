"""weakseg.engine.weight_average and ``ema_decay`` in training: the closed form of the average,
what checkpoints hold, validation of the average, exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.config import ConfigError
from weakseg.engine.train import (
    Hook,
    TrainingInterrupted,
    build,
    default_hooks,
    fit,
    prepare_output_dir,
    train,
)
from weakseg.engine.weight_average import WeightAverage, average_decay

from ._hooks import InterruptAt

pytestmark = pytest.mark.usefixtures("one_thread")


def test_average_decay_warms_up_then_holds() -> None:
    assert average_decay(0.99, 1) == pytest.approx(2 / 11)
    assert average_decay(0.99, 80) == pytest.approx(81 / 90)
    assert average_decay(0.99, 10_000) == 0.99
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\), got 1.0"):
        WeightAverage(nn.Linear(2, 2), 1.0)


def test_update_is_the_closed_form_for_parameters_and_batch_norm_buffers() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(network, decay=0.5)
    start = {k: v.clone() for k, v in network.state_dict().items()}
    history = []
    for step in (1, 2, 3):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn_like(parameter))
        network(torch.randn(5, 3))  # train mode: running statistics and the counter move
        history.append({k: v.clone() for k, v in network.state_dict().items()})
        average.update(network, step)
    for key, value in average.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == 3  # copied, not averaged
            continue
        expected = start[key]
        for step, state in zip((1, 2, 3), history, strict=True):
            d = min(0.5, (1 + step) / (10 + step))
            expected = d * expected + (1 - d) * state[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert not any(p.requires_grad for p in average.module.parameters())
    assert not average.module.training


# 2 steps per epoch (4 images, batch 2), 2 epochs, the average at decay 0.6
_AVERAGED = ("max_iterations=4", "epochs=2", "ema_decay=0.6")


class _Weights(Hook):
    """The trained weights at the start and after every step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _keep(self, run) -> None:
        self.states.append({k: v.clone() for k, v in run.model_without_ddp.state_dict().items()})

    def on_fit_start(self, run) -> None:
        self._keep(run)

    def on_iteration(self, run, terms) -> None:
        self._keep(run)


def test_checkpoints_hold_the_average_as_model_and_validation_measures_it(
    tmp_path, tiny_config
) -> None:
    run = build(tiny_config(*_AVERAGED))
    prepare_output_dir(run)
    weights = _Weights()
    validated = []
    hooks = default_hooks(run)
    validation = next(h for h in hooks if type(h).__name__ == "Validation")
    original = validation.evaluate

    def spy(run):
        validated.append({k: v.clone() for k, v in run.result_model.state_dict().items()})
        return original(run)

    validation.evaluate = spy
    fit(run, [weights, *hooks])

    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert checkpoint["iteration"] == 4
    expected = {k: v.clone() for k, v in weights.states[0].items()}
    for step, state in enumerate(weights.states[1:], start=1):
        d = average_decay(0.6, step)
        for key, value in expected.items():
            if value.is_floating_point():
                value.mul_(d).add_((1 - d) * state[key])
            else:
                value.copy_(state[key])
    trained = weights.states[-1]
    for key in expected:
        torch.testing.assert_close(checkpoint["model"][key], expected[key], msg=key)
        assert torch.equal(checkpoint["trained_model"][key], trained[key]), key
        assert torch.equal(validated[-1][key], checkpoint["model"][key]), key
    assert any(not torch.equal(checkpoint["model"][k], trained[k]) for k in trained)


def test_resume_continues_the_average_exactly(tmp_path, tiny_config) -> None:
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    train(tiny_config(*_AVERAGED, root=reference))
    run = build(tiny_config(*_AVERAGED, root=stopped))
    prepare_output_dir(run)
    with pytest.raises(TrainingInterrupted):
        fit(run, [*default_hooks(run), InterruptAt(at=2)])  # stops after step 3, mid-epoch
    assert load_checkpoint(stopped / "run" / "checkpoint.pth")["iteration"] == 3
    train(tiny_config(*_AVERAGED, "resume=auto", root=stopped))
    final = load_checkpoint(stopped / "run" / "checkpoint.pth")
    expected = load_checkpoint(reference / "run" / "checkpoint.pth")
    assert final["iteration"] == expected["iteration"] == 4
    for part in ("model", "trained_model"):
        for key, value in expected[part].items():
            assert torch.equal(final[part][key], value), (part, key)


def test_ema_decay_is_checked_and_fixed_on_resume(tiny_config) -> None:
    for bad in ("0", "1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="ema_decay must be"):
            tiny_config(f"ema_decay={bad}")
    train(tiny_config("max_iterations=2"))
    with pytest.raises(ConfigError, match=r"with ema_decay=0.6: the run was trained with "):
        train(tiny_config("max_iterations=2", "ema_decay=0.6", "resume=auto"))
