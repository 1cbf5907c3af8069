"""Checkpoints: a plain dict written atomically, and the RNG states that make resuming exact.

A training checkpoint holds ``{"model", "optimizer", "lr_scheduler", "scaler", "epoch",
"iteration", "args", "rng", "best_miou", "class_names", "version"}`` (``epoch``: the epoch in
progress, ``iteration``: optimizer steps done so far); every value is a tensor, a number, a
string or a container of them, so it loads with ``torch.load(weights_only=True)``; a file
holding anything else (a pickled object, which could run code) is refused with our own message.

Saves are atomic and safe against ``kill -9`` at any moment: the state goes to a temporary
``.<name>.<random>.tmp`` in the same folder, then replaces the checkpoint. The temporaries of
saves that were killed midway are removed by the next save of the same checkpoint (each writer
holds an ``flock`` on its temporary, so a save still in progress is never touched).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakseg.errors import DataError, MissingFileError
from weakseg.models.weights_file import read_weights

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temporaries are left
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckpointNotFoundError",
    "get_rng_state",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointNotFoundError(MissingFileError):
    """No checkpoint at the given path (a :class:`DataError` and a ``FileNotFoundError``)."""


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries ``.<name>.*.tmp`` that saves of ``path`` killed midway left.

    A temporary whose writer is still alive is locked (``flock``) and kept. Returns the paths
    removed.
    """
    path = Path(path)
    removed: list[Path] = []
    if fcntl is None or not path.parent.is_dir():  # pragma: no cover - Windows
        return removed
    for candidate in path.parent.glob(f"{_temporary_prefix(path)}*.tmp"):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a save in progress
        else:
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
        finally:
            os.close(fd)
    return removed


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed to
    disk, then ``os.replace`` (a reader or a crash never sees a half-written checkpoint).
    Temporaries left by earlier saves that were killed are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(
        prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent
    )
    try:
        if fcntl is not None:  # marks the temporary as in use until this save ends
            fcntl.flock(handle, fcntl.LOCK_EX)
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointNotFoundError: no such file (also a ``FileNotFoundError``).
        DataError: the file is unreadable, holds pickled objects (refused: loading them could
            run code) or is not a checkpoint dict with a ``"model"`` entry (also a
            ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path}", hint="give the path of a .pth file of 'weakseg train'"
        )
    state = read_weights(path, map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(
            f"{path} is not a weakseg checkpoint (a dict with a 'model' entry)",
            hint="give a checkpoint of 'weakseg train' (checkpoint.pth or best.pth)",
        )
    return state


def get_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
