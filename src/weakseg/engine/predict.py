"""Loading a trained model from a checkpoint, and writing palette masks and overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from weakseg.data.io import read_image, write_label
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from weakseg.engine.checkpoint import load_checkpoint
from weakseg.engine.evaluate import predict_probs
from weakseg.models import build_crf_layer_model, build_model

__all__ = [
    "IMAGE_SUFFIXES",
    "colorize",
    "find_images",
    "load_trained_model",
    "overlay",
    "palette",
    "predict_file",
    "write_prediction",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def palette() -> np.ndarray:
    """The PASCAL VOC colour map: uint8 ``[256, 3]`` (class 0 black, 255 light gray)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[index] = (r, g, b)
    return colours


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
        FileNotFoundError: no such file.
        ValueError: not a weakseg training checkpoint (no ``model_config``).
    """
    checkpoint = load_checkpoint(path)
    model_config = checkpoint.get("model_config")
    if not isinstance(model_config, dict):
        raise ValueError(f"{path} has no 'model_config': not a checkpoint of 'weakseg train'")
    model = build_model(
        model_config["name"],
        model_config["num_classes"],
        in_channels=model_config["in_channels"],
        output_stride=model_config.get("output_stride"),
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
    """The image files of ``inputs`` (files, or folders scanned for :data:`IMAGE_SUFFIXES`).

    Raises FileNotFoundError for a path that does not exist or a folder without images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                raise FileNotFoundError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            found += images
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return found


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
    """Segment one image file: ``(image_raw [C, H, W] float32 0-255, label [H, W] uint8)``."""
    raw = read_image(path, in_channels)  # (C, H, W) 0-255
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
