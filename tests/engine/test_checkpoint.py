"""weakseg.engine.checkpoint: atomic writes, weights_only loading, RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from weakseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


def test_save_load_round_trip(tmp_path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "args": {"lr": 0.1, "x": None}}
    path = save_checkpoint(state, tmp_path / "sub" / "checkpoint.pth")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 2 and loaded["args"] == {"lr": 0.1, "x": None}
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth"]  # no temporary left


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    path = save_checkpoint({"model": {}, "epoch": 1}, tmp_path / "checkpoint.pth")

    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_rng_state_round_trip_loads_weights_only(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 (the global generators are what is saved)
    torch.manual_seed(3)
    save_checkpoint({"model": {}, "rng": get_rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(1), expected[2])


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*none.pth"):
        load_checkpoint(tmp_path / "none.pth")
    torch.save({"weights": 1}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match=r"foreign.pth is not a weakseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*junk.pth"):
        load_checkpoint(tmp_path / "junk.pth")
