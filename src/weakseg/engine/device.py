"""The torch device a command asked for, checked before any work starts.

Every command that takes ``--device`` (train's ``device`` key, eval, predict, viz, demo,
segment, bench) resolves it here, so that a device that is not there (``cuda`` without CUDA,
``cuda:3`` on a one-GPU machine, a misspelled name) is one line naming it, not a traceback
from deep inside the first forward pass.

Example::

    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import torch

from weakseg.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(
    name: str | torch.device, local_rank: int | None = None, *, option: str = "--device"
) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), or a torch device name that exists here.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``... or a device.
        local_rank: under ``torchrun``, the process's local rank: a CUDA device without an
            index becomes ``cuda:<local_rank>`` and is made the current device.
        option: how the user gave it (the flag or config key), for the message.

    Raises:
        ConfigError: an unknown device name, CUDA (or MPS) asked for but not available, or a
            CUDA index beyond the devices present.
    """
    if isinstance(name, str) and name.strip().lower() == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"{option} {name!r} is not a device name",
            hint="use auto, cpu, cuda or cuda:N",
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{option} {name} asked for, but CUDA is not available on this machine",
                hint="use --device cpu (or auto), or install a CUDA build of PyTorch",
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"{option} {name} asked for, but this machine has {count} CUDA device(s)",
                hint=f"use cuda:0 .. cuda:{count - 1}",
            )
        if local_rank is not None:
            if device.index is None:
                device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    elif device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(
            f"{option} {name} asked for, but MPS is not available on this machine",
            hint="use --device cpu (or auto)",
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"{option} {name} is not supported by weakseg",
            hint="use auto, cpu, cuda or cuda:N",
        )
    return device
