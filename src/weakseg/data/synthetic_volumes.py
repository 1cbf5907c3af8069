"""A tiny synthetic cardiac-like MRI set in the volume folder format, for tests, demos and
benchmarks: shaped like the public medical scribble releases (NIfTI volumes; scribbles for the
training cases only, full masks for the validation cases only).

Each volume ``[H, W, S]`` (through-plane axis last, anisotropic spacing) shows a disc (class 3,
"left ventricle": bright) inside a ring (class 2, "myocardium": dark) with a crescent beside it
(class 1, "right ventricle": bright), shrinking towards the apex; intensities are in an MRI-like
range (about 0-900, not 0-255) with noise and a bias field, so ``intensity_percentiles`` matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from weakseg.data.scribbles import simulate_scribbles

__all__ = ["SYNTHETIC_VOLUME_CLASSES", "synthetic_volume", "write_synthetic_volumes"]

SYNTHETIC_VOLUME_CLASSES: tuple[str, ...] = (
    "background",
    "right_ventricle",
    "myocardium",
    "left_ventricle",
)


def synthetic_volume(
    shape: Sequence[int] = (48, 40, 6), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 [H, W, S], mask uint8 [H, W, S])`` of one synthetic case."""
    height, width, slices = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = height * rng.uniform(0.45, 0.55), width * rng.uniform(0.5, 0.6)
    radius = min(height, width) * rng.uniform(0.16, 0.2)
    mask = np.zeros((height, width, slices), np.uint8)
    for s in range(slices):
        shrink = 1.0 - 0.5 * s / max(slices - 1, 1)  # base to apex
        r = np.hypot(y - cy, x - cx)
        lv, wall = radius * shrink, radius * shrink * 0.45 + 1.5
        rv = np.hypot(y - cy, (x - cx + lv * 1.9) * 0.8) < lv * 1.1
        mask[..., s][rv & (r > lv + wall)] = 1
        mask[..., s][(r >= lv) & (r < lv + wall)] = 2
        mask[..., s][r < lv] = 3
    level = np.array([120.0, 650.0, 260.0, 720.0])
    bias = 1.0 + 0.2 * (y / height - 0.5)[..., None]
    image = level[mask] * bias + rng.normal(0.0, 45.0, mask.shape)
    return np.clip(image, 0.0, None).astype(np.float32), mask


def write_synthetic_volumes(
    root: str | Path,
    n_train: int = 4,
    n_val: int = 2,
    shape: Sequence[int] = (48, 40, 6),
    spacing: Sequence[float] = (1.5, 1.5, 8.0),
    seed: int = 0,
) -> Path:
    """Write a synthetic volume dataset as NIfTI and return ``root``.

    ``images/case_NNN.nii.gz`` for every case, ``scribbles/`` (simulated per slice, 255 =
    unlabeled) for the ``n_train`` training cases only, ``masks/`` for the ``n_val`` validation
    cases only, ``splits/train.txt``, ``splits/val.txt``, ``classes.txt``. The affine is the
    diagonal of ``spacing`` (mm).
    """
    import nibabel

    root = Path(root)
    for sub in ("images", "scribbles", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*(float(s) for s in spacing), 1.0])
    ids = [f"case_{i:03d}" for i in range(n_train + n_val)]
    for index, case in enumerate(ids):
        image, mask = synthetic_volume(shape, seed * 1000 + index)
        nibabel.save(nibabel.Nifti1Image(image, affine), str(root / "images" / f"{case}.nii.gz"))
        if index < n_train:
            scribbles = np.stack(
                [
                    simulate_scribbles(mask[..., s], width=1, min_size=4, seed=index * 100 + s)
                    for s in range(mask.shape[-1])
                ],
                axis=-1,
            ).astype(np.uint8)
            out = root / "scribbles" / f"{case}.nii.gz"
            nibabel.save(nibabel.Nifti1Image(scribbles, affine), str(out))
        else:
            out = root / "masks" / f"{case}.nii.gz"
            nibabel.save(nibabel.Nifti1Image(mask, affine), str(out))
    (root / "splits" / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (root / "splits" / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in SYNTHETIC_VOLUME_CLASSES))
    return root
