"""Loading a trained model from a checkpoint, and writing palette masks and overlays.

Predictions never write over an input and never over each other: :func:`output_names` gives
every input its own name (``<stem>``, or ``<stem>_<extension>`` when two inputs share a stem,
as ``a.jpg`` and ``a.png`` do) and refuses, naming both, inputs that would still collide;
:func:`check_outputs` refuses, before any work, an output folder that holds an input (``-o``
equal to the input folder), where a prediction would replace an input, or that cannot be
written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from weakseg.data.io import VOC_PALETTE, read_image, write_label
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from weakseg.data.volumes import file_id, is_volume_file
from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.evaluate import predict_probs
from weakseg.engine.run_dir import ensure_writable_folder
from weakseg.errors import DataError, MissingFileError
from weakseg.models import build_crf_layer_model, build_model

__all__ = [
    "IMAGE_SUFFIXES",
    "InputNotFoundError",
    "check_outputs",
    "check_scales",
    "colorize",
    "find_images",
    "load_trained_model",
    "output_names",
    "overlay",
    "palette",
    "predict_file",
    "prediction_files",
    "write_prediction",
]


class InputNotFoundError(MissingFileError):
    """An input path does not exist, or a folder holds no image (also a ``FileNotFoundError``)."""


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def palette() -> np.ndarray:
    """The PASCAL VOC colour map: uint8 ``[256, 3]`` (class 0 black, 255 light gray), a
    writable copy of :data:`weakseg.data.io.VOC_PALETTE`."""
    return VOC_PALETTE.copy()


def colorize(label: Tensor) -> Tensor:
    """Class ids ``[H, W]`` -> uint8 RGB ``[3, H, W]`` with :func:`palette`."""
    colours = torch.from_numpy(palette())
    return colours[label.long().clamp(0, 255)].permute(2, 0, 1).contiguous()


def overlay(image_raw: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours of ``label [H, W]`` over ``image_raw [C, H, W]`` (0-255; gray is
    replicated) where the class is not 0: uint8 ``[H, W, 3]``."""
    rgb = np.repeat(image_raw, 3, axis=0) if image_raw.shape[0] == 1 else image_raw[:3]
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    colours = palette()[label].astype(np.float32)
    foreground = (label > 0)[..., None]
    blended = np.where(foreground, (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def load_trained_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a ``weakseg train`` checkpoint (eval mode, on ``device``) and the checkpoint.

    A checkpoint trained with ``crf_layer`` gives the network wrapped with its trained
    CRF-as-RNN layer (:class:`~weakseg.models.CRFLayerModel`).

    Raises:
        FileNotFoundError: no such file (a :class:`~weakseg.errors.DataError`).
        DataError: unreadable, refused, or not a weakseg training checkpoint (no
            ``model_config``); also a ``ValueError``.
    """
    checkpoint = load_checkpoint(path)
    model_config = checkpoint.get("model_config")
    if not isinstance(model_config, dict):
        raise DataError(
            f"{path} has no 'model_config': not a checkpoint of 'weakseg train'",
            hint="give the checkpoint.pth or best.pth of a 'weakseg train' run",
        )
    model = build_model(
        model_config["name"],
        model_config["num_classes"],
        in_channels=model_config["in_channels"],
        output_stride=model_config.get("output_stride"),
        options=model_config.get("options"),
    )
    if model_config.get("crf_layer") is not None:
        model = build_crf_layer_model(
            model,
            model_config["num_classes"],
            model_config["crf_layer"],
            model_config["mean"],
            model_config["std"],
        )
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files of ``inputs`` (files, or folders scanned for :data:`IMAGE_SUFFIXES` and
    volume files, ``.nii``, ``.nii.gz``, ``.h5``), each file once (a file also found in a given
    folder is not predicted twice).

    Raises:
        InputNotFoundError: a path that does not exist, or a folder without images.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_volume_file(p))
            )
            if not images:
                raise InputNotFoundError(
                    f"no image ({', '.join(IMAGE_SUFFIXES)}) in folder {path}",
                    hint="give image files or folders that hold some",
                )
        elif path.is_file():
            images = [path]
        else:
            raise InputNotFoundError(f"input not found: {path}", hint="check the path")
        for image in images:
            key = image.resolve()
            if key not in seen:
                seen.add(key)
                found.append(image)
    return found


def prediction_files(name: str, with_overlay: bool = True, volume: bool = False) -> list[str]:
    """The file names :func:`write_prediction` writes for ``name`` (a volume input: its
    NIfTI prediction ``<name>.nii.gz`` only)."""
    if volume:
        return [f"{name}.nii.gz"]
    return [f"{name}.png"] + ([f"{name}_overlay.png"] if with_overlay else [])


def _extension(path: Path) -> str:
    """``png`` for ``a.png``, ``nii_gz`` for ``a.nii.gz``."""
    return path.name[len(file_id(path)) :].lstrip(".").replace(".", "_").lower()


def output_names(paths: Sequence[Path], with_overlay: bool = True) -> list[str]:
    """A distinct output name (without extension) for each input of ``paths``.

    ``<stem>``, or ``<stem>_<extension>`` (lower case) for inputs that share their stem (``a.jpg``
    -> ``a_jpg``, ``a.png`` -> ``a_png``, ``a.nii.gz`` -> ``a_nii_gz``; the stem of a volume
    file is its name without ``.nii.gz`` / ``.nii`` / ``.h5``).

    Raises:
        DataError: two inputs whose files (mask or overlay) would still have the same name,
            e.g. ``x/a.png`` and ``y/a.png``, or ``a.png`` and ``a_overlay.png``; naming both.
    """
    stems = Counter(file_id(path) for path in paths)
    names = [
        file_id(path) if stems[file_id(path)] == 1 else f"{file_id(path)}_{_extension(path)}"
        for path in paths
    ]
    owners: dict[str, Path] = {}
    for path, name in zip(paths, names, strict=True):
        for file in prediction_files(name, with_overlay, is_volume_file(path)):
            other = owners.setdefault(file, path)
            if other is not path:
                raise DataError(
                    f"the inputs {other} and {path} would both be predicted to {file}",
                    hint="predict them into separate output folders (-o), or rename one",
                )
    return names


def check_outputs(
    output_dir: str | Path,
    paths: Sequence[Path],
    names: Sequence[str],
    with_overlay: bool = True,
) -> Path:
    """Check, before any work, that the predictions of ``paths`` (named ``names``) can be
    written into ``output_dir`` without replacing one of the inputs.

    Creates ``output_dir`` when missing.

    Raises:
        DataError: ``output_dir`` is the folder of an input (naming it), a prediction would be
            written over an input image through a link (naming both), or the folder cannot
            be created or written.
    """
    output_dir = Path(output_dir)
    parent = output_dir.resolve()
    for path in paths:  # predictions among the images: the next run would take them as inputs
        if path.resolve().parent == parent:
            raise DataError(
                f"the output folder {output_dir} holds the input {path}: predictions would "
                "replace or mix with the images",
                hint="choose an output folder (-o) other than the inputs' folder",
            )
    inputs = {path.resolve(): path for path in paths}
    for path, name in zip(paths, names, strict=True):
        for file in prediction_files(name, with_overlay, is_volume_file(path)):
            target = inputs.get((parent / file).resolve())  # a link to an input elsewhere
            if target is not None:
                raise DataError(
                    f"the prediction of {path} would be written to {output_dir / file}, "
                    f"replacing the input {target}",
                    hint="choose another output folder (-o)",
                )
    hint = "choose another output folder (-o)"
    return ensure_writable_folder(output_dir, f"predictions to {output_dir}", hint, DataError)


def check_scales(scales: Sequence[float]) -> list[float]:
    """``scales`` as floats, each finite and > 0.

    Raises:
        DataError: an empty list, or a scale that is not a finite positive number.
    """
    values = [float(s) for s in scales]
    bad = [s for s in values if not (math.isfinite(s) and s > 0)]
    if not values or bad:
        raise DataError(
            f"--scales must be finite positive factors, got {values}",
            hint="e.g. --scales 0.75 1 1.25",
        )
    return values


def predict_file(
    model: nn.Module,
    path: str | Path,
    *,
    in_channels: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment one image file: ``(image_raw [C, H, W] float32 0-255, label [H, W] uint8)``.

    Raises:
        DataError: the file is missing, unreadable or truncated, or too small for one of the
            ``scales`` (a scaled side under one pixel).
    """
    raw = read_image(path, in_channels)  # (C, H, W) 0-255
    height, width = raw.shape[-2:]
    for scale in scales:
        # F.interpolate(scale_factor=s) makes floor(side * s) pixels
        if math.floor(height * scale) < 1 or math.floor(width * scale) < 1:
            raise DataError(
                f"image {path} is {width}x{height} px: at scale {scale} it would have no pixel",
                hint="drop that scale (--scales) or skip the image (--skip-bad)",
            )
    raw_tensor = torch.from_numpy(np.ascontiguousarray(raw))
    image = normalize(raw_tensor, mean, std)[None].to(device)
    probs = predict_probs(
        model, image, scales=scales, flip=flip, image_raw=raw_tensor[None].to(device), crf=crf
    )
    return raw, probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def write_prediction(
    output_dir: Path, name: str, raw: np.ndarray, label: np.ndarray, with_overlay: bool = True
) -> list[Path]:
    """Write ``<name>.png`` (palette mask) and ``<name>_overlay.png`` in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / f"{name}.png"]
    write_label(written[0], label)
    if with_overlay:
        written.append(output_dir / f"{name}_overlay.png")
        Image.fromarray(overlay(raw, label)).save(written[1])
    return written
