"""weakseg.engine.checkpoint: atomic writes, weights_only loading, RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from weakseg.engine.checkpoint import (
    CheckpointNotFoundError,
    get_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
)
from weakseg.errors import DataError


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


class _Code:
    """A pickled call: what a crafted checkpoint would run under ``weights_only=False``."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_crafted_checkpoint_is_refused_with_our_message(tmp_path, capsys) -> None:
    torch.save({"model": _Code()}, tmp_path / "crafted.pth")
    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path / "crafted.pth")
    message = str(info.value)
    assert message.startswith(f"refused checkpoint {tmp_path / 'crafted.pth'}: it holds a pickled")
    assert "(print)" in message and "weights_only" not in message
    assert "\n" not in message and "this must never run" not in capsys.readouterr().out


def test_errors_are_data_errors_with_hints(tmp_path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"checkpoint not found: .*x.pth; give"):
        load_checkpoint(tmp_path / "x.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read checkpoint .*junk.pth: .*; the file is"):
        load_checkpoint(tmp_path / "junk.pth")


def test_stale_temporaries_are_removed_at_the_next_save(tmp_path) -> None:
    path = save_checkpoint({"model": {}, "epoch": 1}, tmp_path / "checkpoint.pth")
    stale = tmp_path / ".checkpoint.pth.abc123.tmp"  # a save killed midway (kill -9)
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / ".best.pth.def456.tmp"  # another checkpoint's: not this save's business
    other.write_bytes(b"y")
    save_checkpoint({"model": {}, "epoch": 2}, path)
    assert not stale.exists() and other.exists()
    assert load_checkpoint(path)["epoch"] == 2


def test_temporary_of_a_save_in_progress_is_kept(tmp_path) -> None:
    import fcntl

    busy = tmp_path / ".checkpoint.pth.busy.tmp"
    with open(busy, "wb") as stream:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)  # as a concurrent save holds it
        assert remove_stale_temporaries(tmp_path / "checkpoint.pth") == []
    assert busy.exists()
    assert remove_stale_temporaries(tmp_path / "checkpoint.pth") == [busy]


def test_kill_during_save_leaves_a_loadable_checkpoint_and_no_leftover(tmp_path) -> None:
    import subprocess
    import sys

    path = save_checkpoint({"model": {"w": torch.zeros(4)}, "epoch": 1}, tmp_path / "c.pth")
    script = (
        "import os, signal, torch, sys\n"
        "from weakseg.engine.checkpoint import save_checkpoint\n"
        "real = torch.save\n"
        "def dying(obj, f, *a, **k):\n"
        "    f.write(b'half a checkpoint')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying\n"
        "save_checkpoint({'model': {}, 'epoch': 2}, sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert result.returncode == -9
    assert len(list(tmp_path.glob(".c.pth.*.tmp"))) == 1  # what kill -9 leaves
    assert load_checkpoint(path)["epoch"] == 1
    save_checkpoint({"model": {}, "epoch": 3}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth"]
