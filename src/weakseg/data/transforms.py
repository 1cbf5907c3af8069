"""Joint image / label transforms on ``torchvision.transforms.v2``.

A transform receives and returns the dict the datasets build before normalization:

- ``image``: ``tv_tensors.Image`` float ``[C, H, W]`` in [0, 1] (the raw image / 255, so that
  every v2 photometric transform applies unchanged),
- ``label`` and (when full masks exist) ``mask``: ``tv_tensors.Mask`` int64 ``[H, W]``,
- ``valid_mask``: :class:`ValidMask` (a ``tv_tensors.Mask``) bool ``[H, W]``, True on real pixels.

Geometric v2 transforms move all of them together (masks with nearest interpolation), so any
``torchvision.transforms.v2`` transform, or a ``v2.Compose`` of them, can be passed as a dataset's
``transform``. Padding must go through :class:`PadIfNeeded`, which fills the image with the
dataset mean, labels with 255 and ``valid_mask`` with False (the original code's ROI); the
regularizers then ignore the padding through ``valid_mask``.

A slab of ``S`` slices (:mod:`weakseg.data.slabs`) is the same dict with a leading slab axis
(image ``[S, C, H, W]``, masks ``[S, H, W]``): every transform here and in ``v2`` draws its
parameters once per call, so all the slices get the same geometry (and jitter).

Example::

    >>> dataset = FolderDataset(root, "train", transform=train_transforms(crop_size=256))
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from weakseg.data.scribbles import background_outside_box

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PadIfNeeded",
    "RandomRot90Flip",
    "RandomRotation",
    "RandomScale",
    "ScribbleBoxPrior",
    "ValidMask",
    "eval_transforms",
    "train_transforms",
]

# ImageNet statistics in the 0-255 range; for gray images the average of the three is used.
IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

_IGNORE = 255


class ValidMask(tv_tensors.Mask):
    """``tv_tensors.Mask`` marking real (True) versus padded (False) pixels ``[H, W]``.

    A distinct type so that padding can fill it with False while labels get 255.
    """


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


def _channel_fill(mean: Sequence[float], channels: int) -> list[float]:
    """The padding value for an image in [0, 1] with ``channels`` channels."""
    if len(mean) == channels:
        return [m / 255.0 for m in mean]
    if channels == 1:
        return [sum(mean) / len(mean) / 255.0]
    if len(mean) == 1:
        return [mean[0] / 255.0] * channels
    raise ValueError(f"mean has {len(mean)} values but the image has {channels} channels")


class PadIfNeeded(v2.Transform):
    """Pad bottom and right up to ``size`` (H, W) and to multiples of ``size_divisor``.

    Fills: the image with ``mean`` (0-255 units, per channel), ``ValidMask`` with False,
    any other mask with 255 (unlabeled).
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        size_divisor: int = 1,
    ) -> None:
        super().__init__()
        self.size = None if size is None else _size_pair(size, "size")
        if int(size_divisor) != size_divisor or size_divisor < 1:
            raise ValueError(f"size_divisor must be an integer >= 1, got {size_divisor!r}")
        self.size_divisor = int(size_divisor)
        self.mean = tuple(float(m) for m in mean)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        target_h, target_w = self.size or (height, width)
        target_h, target_w = max(target_h, height), max(target_w, width)
        d = self.size_divisor
        target_h, target_w = -(-target_h // d) * d, -(-target_w // d) * d
        return {"padding": [0, 0, target_w - width, target_h - height]}  # left, top, right, bottom

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        padding = params["padding"]
        if not any(padding):
            return inpt
        if isinstance(inpt, ValidMask):
            fill: float | list[float] = 0
        elif isinstance(inpt, tv_tensors.Mask):
            fill = _IGNORE
        elif isinstance(inpt, tv_tensors.Image):
            fill = _channel_fill(self.mean, inpt.shape[-3])
        else:
            return inpt
        return F.pad(inpt, padding, fill=fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, size_divisor={self.size_divisor}, mean={self.mean}"


class RandomScale(v2.Transform):
    """Resize by a factor drawn from ``U(*scale)``: bilinear for images, nearest for masks."""

    def __init__(self, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale
        if not 0 < low <= high:
            raise ValueError(
                f"scale must be a range (low, high) with 0 < low <= high, got {scale!r}"
            )
        self.scale = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        factor = random.uniform(*self.scale)
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        if isinstance(inpt, tv_tensors.Image):
            out = F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR)
            # antialiased bilinear can overshoot a little; clamp keeps [0, 1] (plain tensor: rewrap)
            return tv_tensors.wrap(out.clamp(0.0, 1.0), like=inpt)
        return inpt

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _fill(inpt: Any, mean: Sequence[float]) -> float | list[float] | None:
    """What uncovered pixels get: the mean (image), 255 (labels), False (``ValidMask``)."""
    if isinstance(inpt, ValidMask):
        return 0
    if isinstance(inpt, tv_tensors.Mask):
        return _IGNORE
    if isinstance(inpt, tv_tensors.Image):
        return _channel_fill(mean, inpt.shape[-3])
    return None


class RandomRotation(v2.Transform):
    """Rotate by an angle drawn from ``U(-degrees, degrees)`` about the centre, same size:
    bilinear for images, nearest for masks; uncovered corners get the mean / 255 / False, so
    the regularizers ignore them through ``valid_mask``."""

    def __init__(self, degrees: float, mean: Sequence[float] = IMAGENET_MEAN) -> None:
        super().__init__()
        if not 0 <= float(degrees) <= 180:
            raise ValueError(f"degrees must be in [0, 180], got {degrees!r}")
        self.degrees = float(degrees)
        self.mean = tuple(float(m) for m in mean)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": random.uniform(-self.degrees, self.degrees)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fill = _fill(inpt, self.mean)
        if fill is None:
            return inpt
        nearest = isinstance(inpt, tv_tensors.Mask)
        mode = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
        return F.rotate(inpt, params["angle"], interpolation=mode, fill=fill)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}"


class RandomRot90Flip(v2.Transform):
    """One of the 8 orientations of the square, uniformly: a rotation by ``k * 90`` degrees,
    ``k`` uniform in 0..3, then a horizontal flip with probability 1/2 (the rotations and
    flips of the WSL4MIS medical scribble baselines, whose ``random_rot_flip`` always flips
    and so reaches only the 4 reflections); square crops keep their size."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": random.randint(0, 3), "flip": random.random() < 0.5}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        if params["flip"]:
            out = out.flip(-1)
        return tv_tensors.wrap(out.contiguous(), like=inpt)


class ScribbleBoxPrior(v2.Transform):
    """The training label's unlabeled pixels outside the scribbles' box, grown by ``margin``
    pixels, become background (:func:`~weakseg.data.scribbles.background_outside_box`).

    It reads the sample dict's ``"label"`` only (a full ``"mask"`` beside it is left alone), so
    it must come first, before any resize or padding: pass it as ``box_margin`` to
    :func:`train_transforms`. A slab's label ``[S, H, W]`` gets the box of each slice's own
    scribbles.
    """

    def __init__(self, margin: int, background: int = 0) -> None:
        super().__init__()
        if int(margin) != margin or margin < 0:
            raise ValueError(f"box margin must be an integer >= 0, got {margin!r}")
        self.margin, self.background = int(margin), int(background)

    def forward(self, *inputs: Any) -> Any:
        sample = inputs[0] if len(inputs) == 1 else inputs
        if not isinstance(sample, dict) or "label" not in sample:
            raise TypeError("ScribbleBoxPrior needs a sample dict with a 'label'")
        label = sample["label"]
        maps = label.as_subclass(torch.Tensor)
        if maps.ndim == 2:
            prior = background_outside_box(maps, self.margin, background=self.background)
        else:  # a slab: one box per slice
            slices = maps.reshape(-1, *maps.shape[-2:])
            boxes = [
                background_outside_box(m, self.margin, background=self.background) for m in slices
            ]
            prior = torch.stack(boxes).reshape(maps.shape)
        return {**sample, "label": tv_tensors.wrap(prior, like=label)}


def train_transforms(
    crop_size: int | Sequence[int],
    scale: tuple[float, float] | None = (0.5, 2.0),
    hflip: float = 0.5,
    jitter: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    rotation: float = 0.0,
    rot90_flip: bool = False,
    box_margin: int | None = None,
) -> v2.Compose:
    """Training augmentation: the scribbles' box prior, random scale, rotation, pad with mean /
    255 / False, random crop, rot90 + flip, horizontal flip, jitter.

    Args:
        crop_size: output (H, W), or one int for squares.
        scale: range of the random resize factor; ``None`` to skip it.
        hflip: probability of a horizontal flip.
        jitter: strength of the photometric jitter (brightness, contrast, saturation; 0 = none).
        mean: padding value for the image, 0-255 per channel (the normalization mean, so that
            padding is 0 after normalization).
        rotation: maximum angle (degrees) of a random rotation; 0 = none.
        rot90_flip: one of the 8 orientations of the square (:class:`RandomRot90Flip`;
            square crops only).
        box_margin: with an int, first :class:`ScribbleBoxPrior` with this margin (pixels):
            unlabeled pixels beyond the grown box of the scribbles are background.
    """
    steps: list[v2.Transform] = []
    if box_margin is not None:
        steps.append(ScribbleBoxPrior(box_margin))
    if scale is not None:
        steps.append(RandomScale(scale))
    if rotation > 0:
        steps.append(RandomRotation(rotation, mean=mean))
    size = _size_pair(crop_size, "crop_size")
    steps += [PadIfNeeded(size, mean=mean), v2.RandomCrop(size)]
    if rot90_flip:
        if size[0] != size[1]:
            raise ValueError(f"rot90_flip needs a square crop_size, got {size}")
        steps.append(RandomRot90Flip())
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return v2.Compose(steps)


def eval_transforms(
    pad_to: int | Sequence[int] | None = None,
    size_divisor: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
) -> v2.Compose:
    """Deterministic evaluation transform: the full image, padded (bottom/right) if asked.

    Args:
        pad_to: minimum output (H, W) so that images of different sizes can be batched.
        size_divisor: pad H and W up to multiples of this (e.g. a network's output stride).
        mean: padding value for the image, 0-255 per channel.
    """
    return v2.Compose([PadIfNeeded(pad_to, mean=mean, size_divisor=size_divisor)])


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image - mean) / std`` for ``image [C, H, W]`` in 0-255; gray images use the averages."""
    channels = image.shape[-3]
    m = torch.tensor(_channel_fill(mean, channels), dtype=image.dtype) * 255.0
    s = torch.tensor(_channel_fill(std, channels), dtype=image.dtype) * 255.0
    return (image - m[:, None, None]) / s[:, None, None]


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The inverse of :func:`normalize`: ``image * std + mean``, 0-255, for ``image [..., C, H,
    W]`` (a batch too), on its device; gray images use the averages."""
    channels = image.shape[-3]
    like = {"dtype": image.dtype, "device": image.device}
    m = torch.tensor(_channel_fill(mean, channels), **like) * 255.0
    s = torch.tensor(_channel_fill(std, channels), **like) * 255.0
    return image * s[:, None, None] + m[:, None, None]
