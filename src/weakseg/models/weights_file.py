"""Reading a PyTorch weights file that a user hands us: ``torch.load(weights_only=True)`` with
our own error messages.

``torch.load`` raises several exception types for a truncated or foreign file, and for a file
that holds pickled Python objects its message advises ``weights_only=False``, which would run
whatever code the file holds. :func:`read_weights` turns all of them into one
:class:`~weakseg.errors.DataError` that names the file and never gives that advice. Used for
pretrained weights (:func:`weakseg.models.load_pretrained`) and training checkpoints
(:func:`weakseg.engine.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from weakseg.errors import DataError

__all__ = ["read_weights"]


def read_weights(
    path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> Any:
    """``torch.load(path, weights_only=True)`` of a file that a user hands us, with our errors.

    Args:
        path: an existing file (the caller checks that it exists and names what is missing).
        map_location: as for ``torch.load``.
        what: the file's kind in the messages (``"checkpoint"``, ``"pretrained weights file"``).

    Raises:
        DataError: the file is truncated or not a PyTorch file, or holds pickled Python objects
            (refused: loading them could run code; the message never suggests
            ``weights_only=False``).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise _unreadable(Path(path), exc, what) from None


def _unreadable(path: Path, exc: Exception, what: str) -> DataError:
    """Our message for a file that ``torch.load(weights_only=True)`` refused or could not read.

    torch's own text for a refused pickle advises loading with ``weights_only=False``, which
    would run whatever code the file holds: it is not passed on.
    """
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return DataError(
            f"refused {what} {path}: it holds a pickled Python object ({found.group(1)}), "
            "and loading one can run arbitrary code; weakseg checkpoints hold tensors, numbers "
            "and strings only",
            hint="use a checkpoint written by weakseg, or re-save the model's state_dict alone",
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.DOTALL)
    if detail:
        reason = " ".join(detail.group(1).split())
    elif "weights_only" in text:
        reason = "refused by the safe loader"
    else:
        lines = text.strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
    return DataError(
        f"cannot read {what} {path}: {reason}",
        hint="the file is truncated or not a PyTorch file; use another one",
    )
