"""Segmenting a whole volume file (NIfTI, HDF5) slice by slice, and writing the result as NIfTI
with the input's affine (``weakseg predict`` on a volume input)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from weakseg.data.volumes import Volume, file_id, read_volume, write_label_volume
from weakseg.engine.evaluate import predict_probs
from weakseg.engine.volume_metrics import largest_component

__all__ = ["predict_volume", "volume_output_name", "write_volume_prediction"]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    path: str | Path,
    *,
    in_channels: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: dict[str, Any] | None = None,
    slice_axis: int | None = None,
    intensity_percentiles: Sequence[float] | None = None,
    lcc: bool = False,
    batch_size: int = 8,
) -> tuple[Volume, np.ndarray]:
    """Segment every slice of a volume file along its slice axis.

    Args:
        model: the trained network (eval mode is set).
        path: ``.nii``, ``.nii.gz`` or ``.h5`` image volume.
        in_channels: the network's input channels (a gray slice is repeated for 3).
        mean, std: the training normalization (0-255).
        slice_axis: the stored array's axis to slice; ``None`` = the through-plane axis (as in
            training, :class:`~weakseg.data.FolderDataset`).
        intensity_percentiles: the training's per-volume intensity scaling, or ``None``.
        lcc: keep the largest connected component (3D) per class.
        batch_size: slices per forward pass.

    Returns:
        ``(volume, labels)``: the image :class:`~weakseg.data.volumes.Volume` (slice axis
        first, intensities as the network saw them) and uint8 class ids ``[S, H, W]``.

    Raises:
        DataError: missing or unreadable file, not 3D.
    """
    percentiles = None if intensity_percentiles is None else tuple(intensity_percentiles)
    volume = read_volume(path, "image", slice_axis, percentiles)
    model.eval()
    labels = np.zeros(volume.array.shape, np.uint8)
    num_classes = 0
    for start in range(0, volume.array.shape[0], batch_size):
        raw = torch.from_numpy(volume.array[start : start + batch_size])[:, None]  # (b, 1, H, W)
        if in_channels == 3:
            raw = raw.expand(-1, 3, -1, -1)
        image = torch.stack([normalize(r, mean, std) for r in raw]).to(device)
        probs = predict_probs(
            model, image, scales=scales, flip=flip, image_raw=raw.to(device), crf=crf
        )
        num_classes = probs.shape[1]
        labels[start : start + len(raw)] = probs.argmax(dim=1).to(torch.uint8).cpu().numpy()
    if lcc:
        labels = largest_component(labels, num_classes).astype(np.uint8)
    return volume, labels


def volume_output_name(path: str | Path) -> str:
    """The file name of a volume's prediction: ``<id>.nii.gz`` (``a.nii.gz``, ``a.h5`` -> ``a``)."""
    return f"{file_id(path)}.nii.gz"


def write_volume_prediction(
    output_dir: str | Path, volume: Volume, labels: np.ndarray, name: str | None = None
) -> Path:
    """Write ``labels [S, H, W]`` as ``output_dir/<name>`` (default
    :func:`volume_output_name`), NIfTI with the affine and header of ``volume``'s file."""
    target = Path(output_dir) / (name or volume_output_name(volume.path))
    return write_label_volume(target, labels, volume.path, volume.axis)
