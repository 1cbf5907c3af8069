"""The synthetic dataset: the embedded default for the demo and the tests.

Each image shows 1-3 objects of three classes told apart by colour *and* texture (warm
stripes, green dots, blue speckle) on a cluttered, shaded background: a smooth colour field,
distractor shapes in colours close to the objects' but without their texture, a global
illumination gradient, sensor noise and slightly blurred edges. Full masks are exact and the
scribbles are simulated with :func:`~weakseg.data.scribbles.simulate_scribbles` (width 2,
40-70% of the full stroke), so only ~5% of the pixels are labeled: a network trained with partial
cross-entropy alone learns the colours and textures but leaves errors along the object
boundaries, which the regularized losses are meant to fix.

Everything is deterministic given ``(seed, index)``; images are small (default 64 px) so that
CPU training takes minutes. :func:`write_synthetic_dataset` writes the same data in the folder
format for :class:`~weakseg.data.FolderDataset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from weakseg.data.dataset import Transform, check_supervision, dataset_label, to_sample
from weakseg.data.io import write_label
from weakseg.data.scribbles import simulate_scribbles
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticDataset",
    "make_synthetic_sample",
    "write_synthetic_dataset",
]

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "stripes", "dots", "speckle")

# Base RGB colour of each object class (0-255); distractors borrow these, without the texture.
_COLOURS = np.array([[205.0, 95.0, 60.0], [70.0, 170.0, 95.0], [80.0, 100.0, 200.0]])


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], scale: float) -> np.ndarray:
    """Low-frequency random field ``[H, W]`` in about [-1, 1]."""
    noise = rng.standard_normal(size)
    field = ndi.gaussian_filter(noise, sigma=scale * max(size), mode="wrap")
    return field / (np.abs(field).max() + 1e-8)


def _blob(rng: np.random.Generator, size: tuple[int, int], radius: float) -> np.ndarray:
    """A random star-shaped blob (ellipse with a wobbly radius) as a bool mask ``[H, W]``."""
    height, width = size
    cy = rng.uniform(0.15, 0.85) * height
    cx = rng.uniform(0.15, 0.85) * width
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    angle0 = rng.uniform(0, math.pi)
    elongation = rng.uniform(0.55, 1.0)
    dy, dx = y - cy, x - cx
    u = dx * math.cos(angle0) + dy * math.sin(angle0)
    v = (-dx * math.sin(angle0) + dy * math.cos(angle0)) / elongation
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.12) * np.cos(harmonic * theta + rng.uniform(0, 2 * math.pi))
    return rho <= radius * wobble


def _texture(rng: np.random.Generator, k: int, size: tuple[int, int]) -> np.ndarray:
    """Texture ``[H, W]`` around 0 (amplitude ~1) of object class ``k`` (1-based)."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if k == 1:  # oriented stripes, period 5-7 px
        angle, period = rng.uniform(0, math.pi), rng.uniform(5.0, 7.0)
        return np.sign(np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period))
    if k == 2:  # dots on a grid, period 6 px
        period = 6.0
        oy, ox = rng.uniform(0, period, size=2)
        dist = np.hypot((y + oy) % period - period / 2, (x + ox) % period - period / 2)
        return np.where(dist < 1.6, 1.0, -0.4)
    return ndi.gaussian_filter(rng.standard_normal(size), 0.6) * 2.5  # fine speckle


def make_synthetic_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 64),
    num_objects: tuple[int, int] = (1, 3),
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask.

    Returns:
        ``image`` uint8 ``[H, W, 3]`` and ``mask`` uint8 ``[H, W]`` (class ids 0..3).
    """
    height, width = size
    base = rng.uniform(90, 170, size=3)
    tint = np.stack([_smooth_field(rng, size, 0.12) for _ in range(3)], axis=-1)
    image = base + 35.0 * tint  # (H, W, 3) smooth coloured background
    # clutter: shapes in colours close to the objects' (or random ones), untextured
    for _ in range(int(rng.integers(3, 7))):
        shape = _blob(rng, size, rng.uniform(0.06, 0.16) * min(size))
        if rng.random() < 0.6:
            colour = _COLOURS[rng.integers(0, 3)] + rng.normal(0, 18, size=3)
        else:
            colour = rng.uniform(40, 220, size=3)
        image[shape] = 0.5 * image[shape] + 0.5 * colour
    mask = np.zeros(size, dtype=np.uint8)
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    for _ in range(count):
        k = int(rng.integers(1, 4))
        shape = _blob(rng, size, rng.uniform(0.14, 0.26) * min(size))
        colour = _COLOURS[k - 1] + rng.normal(0, 12, size=3)
        texture = _texture(rng, k, size)[..., None]
        image[shape] = colour + 22.0 * texture[shape]
        mask[shape] = k
    # global illumination gradient (multiplicative), then soft edges and sensor noise
    gy, gx = rng.uniform(-0.35, 0.35, size=2)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    shading = 1.0 + gy * (y / height - 0.5) + gx * (x / width - 0.5)
    image = image * shading[..., None]
    image = ndi.gaussian_filter(image, sigma=(0.7, 0.7, 0))
    image = image + rng.normal(0, 6.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


class SyntheticDataset(Dataset):
    """``n`` synthetic samples of ``size`` px, deterministic by ``seed`` (see the module docstring).

    Samples are the dicts of :mod:`weakseg.data.dataset` (``mask`` always present, K = 4 classes
    :data:`SYNTHETIC_CLASSES`, ``C`` = 3); sample ``i`` depends only on ``(seed, i, size)``.

    Args:
        n: number of samples.
        size: image side, or (H, W).
        seed: the dataset seed.
        supervision: ``"scribbles"``, ``"clicks"``, ``"full"``, ``"tags"`` or ``"unlabeled"``.
        transform: joint transform (see :mod:`weakseg.data.transforms`), or ``None``.
        shorten_ratio: with ``supervision="scribbles"``, shorten them to this ratio.
        cache: keep generated samples in memory (a few kB each).
        mean, std: normalization statistics in 0-255.

    Example::

        >>> data = SyntheticDataset(200, 64, seed=0)
        >>> data[0]["image"].shape, data[0]["label"].shape
        (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    class_names: ClassVar[list[str]] = list(SYNTHETIC_CLASSES)
    num_classes = len(SYNTHETIC_CLASSES)
    has_masks = True

    def __init__(
        self,
        n: int,
        size: int | Sequence[int] = 64,
        seed: int = 0,
        *,
        supervision: str = "scribbles",
        transform: Transform | None = None,
        shorten_ratio: float = 1.0,
        cache: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if len(pair) != 2 or any(int(s) != s or s < 16 for s in pair):
            raise ValueError(f"size must be an int >= 16 or an (H, W) pair of them, got {size!r}")
        check_supervision(supervision, shorten_ratio)
        self.n = int(n)
        self.size = (int(pair[0]), int(pair[1]))
        self.seed = int(seed)
        self.supervision = supervision
        self.transform = transform
        self.shorten_ratio = float(shorten_ratio)
        self.mean, self.std = tuple(mean), tuple(std)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = (
            {} if cache else None
        )

    def __len__(self) -> int:
        return self.n

    def sample_id(self, index: int) -> str:
        """The ``id`` of sample ``index`` (``synthetic_00042``; the file stem in the folder
        format of :func:`write_synthetic_dataset`)."""
        return f"synthetic_{index:05d}"

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` as arrays: image uint8 ``[H, W, 3]``, mask and scribbles ``[H, W]``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, index])
        image, mask = make_synthetic_sample(rng, self.size)
        # shorter strokes than the ACDC calibration: at 64 px a full one labels ~6% of the pixels
        scribbles = simulate_scribbles(mask, length=(0.4, 0.7), seed=rng).astype(np.uint8)
        if self._cache is not None:
            self._cache[index] = (image, mask, scribbles)
        return image, mask, scribbles

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} samples")
        index %= self.n
        image, mask, scribbles = self.generate(index)
        label, tags = dataset_label(self, self.size, scribbles, mask)
        raw = image.transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
        return to_sample(
            self.sample_id(index), raw, label, mask, tags, self.transform, self.mean, self.std
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(n={self.n}, size={self.size}, seed={self.seed}, "
            f"supervision={self.supervision!r})"
        )


def write_synthetic_dataset(
    root: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    size: int | Sequence[int] = 64,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset in the folder format and return ``root``.

    ``images/`` (RGB PNG), ``scribbles/``, ``masks/``, ``splits/train.txt``, ``splits/val.txt``,
    ``classes.txt``; ids ``synthetic_00000``...; train samples are indices ``0..n_train-1`` of
    ``SyntheticDataset(n_train + n_val, size, seed)``, val samples the rest.
    """
    root = Path(root)
    data = SyntheticDataset(n_train + n_val, size, seed, cache=False)
    for sub in ("images", "scribbles", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(len(data)):
        image, mask, scribbles = data.generate(index)
        sample_id = data.sample_id(index)
        Image.fromarray(image).save(root / "images" / f"{sample_id}.png")
        write_label(root / "masks" / f"{sample_id}.png", mask)
        write_label(root / "scribbles" / f"{sample_id}.png", scribbles)
        ids.append(sample_id)
    (root / "splits" / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (root / "splits" / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in SYNTHETIC_CLASSES))
    return root
