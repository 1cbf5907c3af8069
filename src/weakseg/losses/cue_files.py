"""Localization cues from PNG files, for the SEC losses: ``<folder>/<id>.png``, one class id
per pixel, ``255`` = no cue.

(File I/O belongs with the datasets in :mod:`weakseg.data`; it stays here, next to the cue
format, until that package takes it over.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from weakseg.errors import DataError, MissingFileError
from weakseg.losses.seeding import NO_CUE, cues_from_labels

__all__ = ["load_cues"]


def _read_cue_png(path: Path, num_classes: int) -> np.ndarray:
    """One cue map ``uint8 [H, W]``; the errors name the file."""
    if not path.is_file():
        raise MissingFileError(f"missing cue file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            label = np.array(image, dtype=np.uint8) if mode in ("L", "P", "1") else None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"unreadable or truncated cue file {path}: {exc}") from None
    if label is None:
        raise DataError(
            f"cue file {path} has mode {mode!r}; cue maps must be single-channel 8-bit "
            "(gray or palette) PNGs of class ids, 255 = no cue"
        )
    bad = (label >= num_classes) & (label != NO_CUE)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))[:10]
        raise DataError(
            f"cue file {path} holds class ids {values} >= num_classes={num_classes} "
            f"(valid: 0..{num_classes - 1} and 255 = no cue) in {int(bad.sum())} pixels"
        )
    return label


def load_cues(
    folder: str | Path,
    ids: Sequence[str],
    num_classes: int,
    *,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Read localization cues ``bool Tensor[B, K, H, W]`` from ``<folder>/<id>.png``.

    Format: one single-channel PNG per image (8-bit gray or palette, read by index, like the
    label maps of the folder datasets), holding at each pixel the class id ``0..K-1`` of its
    cue (background included, usually id 0) and ``255`` where there is no cue. One cue per pixel:
    for overlapping cues build the tensor yourself. Cues are usually stored at the resolution of
    the network output (41x41 for DeepLab-LargeFOV on 321x321 crops).

    Args:
        folder: the folder of cue PNGs.
        ids: the image ids, in batch order.
        num_classes: K, including background.
        size: optional ``(H, W)`` to resize every cue map to (nearest neighbour; thin cues may
            lose pixels when shrunk). Without it all maps must have the same size.

    Raises:
        MissingFileError: a missing file (the message names it; also a ``FileNotFoundError``).
        DataError: an unreadable or non-single-channel file, a class id ``>= K`` other than
            255, maps of different sizes without ``size`` (also a ``ValueError``).
        ValueError: empty ``ids``, bad ``num_classes`` or ``size``.
    """
    folder = Path(folder)
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty: give at least one image id")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if size is not None and (len(size) != 2 or min(int(s) for s in size) < 1):
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {size!r}")
    maps = []
    for sample_id in ids:
        path = folder / f"{sample_id}.png"
        label = _read_cue_png(path, num_classes)
        if size is not None and tuple(label.shape) != tuple(size):
            resized = Image.fromarray(label).resize((int(size[1]), int(size[0])), Image.NEAREST)
            label = np.asarray(resized, dtype=np.uint8)
        if maps and label.shape != maps[0].shape:
            raise DataError(
                f"cue file {path} is {label.shape[1]}x{label.shape[0]} (WxH) but "
                f"{folder / (ids[0] + '.png')} is {maps[0].shape[1]}x{maps[0].shape[0]}; "
                "pass size=(H, W) to resize them"
            )
        maps.append(label)
    labels = torch.from_numpy(np.stack(maps).astype(np.int64))  # (B, H, W)
    return cues_from_labels(labels, num_classes, NO_CUE)
