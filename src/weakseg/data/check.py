"""Checking a folder dataset before training: what each split holds and every problem, with its
file (``weakseg data check ROOT``).

:func:`check_dataset` reads every file of every split and never stops at the first problem;
:func:`check_split_labels` is the fast path a training run uses up front: only the label files
of one split, only their values against the number of classes.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from weakseg.data.dataset import index_dir, read_split
from weakseg.data.folder import read_classes
from weakseg.data.io import (
    IGNORE_INDEX,
    check_label_values,
    read_image,
    read_label,
    unlabeled_hint,
)
from weakseg.data.volumes import (
    is_volume_file,
    read_volume,
    through_plane_axis,
    volume_key,
    volume_shape,
)
from weakseg.errors import DataError

__all__ = [
    "DataProblem",
    "DuplicateImages",
    "SplitReport",
    "check_dataset",
    "check_split",
    "check_split_labels",
    "find_duplicate_images",
]

_ROLES = (("scribble", "scribbles"), ("mask", "masks"))


@dataclass(frozen=True)
class DataProblem:
    """One problem of a dataset: the file (``None`` for the split as a whole), the id, what."""

    path: Path | None
    id: str
    message: str

    def __str__(self) -> str:
        return self.message if self.path is None else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class DuplicateImages:
    """Images that are identical pixel for pixel in different volumes (or splits).

    ``members`` are the ``(split, volume)`` pairs that hold them -- the volume file's id, or
    for 2D images the volume their ids group into -- and ``images`` how many such images
    they share. Not a problem by itself (a scan may be released twice), but it weighs twice
    in a per-volume mean, and across splits an evaluation sees training images.
    """

    members: tuple[tuple[str, str], ...]
    images: int

    @property
    def across_splits(self) -> bool:
        return len({split for split, _ in self.members}) > 1

    def __str__(self) -> str:
        names = " = ".join(f"{split}/{name}" for split, name in self.members)
        note = " (across splits: evaluation sees training images)" if self.across_splits else ""
        plural = "s" if self.images > 1 else ""
        return f"{names}: {self.images} identical image{plural}{note}"


@dataclass
class SplitReport:
    """What :func:`check_split` found in one split.

    ``shapes`` counts image shapes (``(C, H, W)`` for 2D images, ``(S, H, W)`` slice axis first
    for volumes), ``spacings`` the voxel spacings (``(s, h, w)`` mm; ``None`` = unknown),
    ``classes`` the class ids present per label kind, ``volumes`` the volume files or, for 2D
    images, the volumes their ids group into (:func:`~weakseg.data.volumes.volume_key`),
    ``files`` how many ids have each kind of file, ``labeled_fraction`` the share of scribbled
    pixels over the images with scribbles, ``duplicates`` the groups of identical images
    this split is part of (:func:`check_dataset` fills it in).
    """

    name: str
    ids: int = 0
    volumes: int = 0
    slices: int = 0
    volumetric: bool = False
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    intensity: tuple[float, float] | None = None
    files: dict[str, int] = field(default_factory=lambda: {"scribble": 0, "mask": 0})
    classes: dict[str, set[int]] = field(default_factory=lambda: {"scribble": set(), "mask": set()})
    labeled_pixels: int = 0
    scribbled_pixels_total: int = 0
    problems: list[DataProblem] = field(default_factory=list)
    duplicates: list[DuplicateImages] = field(default_factory=list)
    # id -> digest of its image's pixels (constant images left out): find_duplicate_images
    image_digests: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def labeled_fraction(self) -> float | None:
        if not self.scribbled_pixels_total:
            return None
        return self.labeled_pixels / self.scribbled_pixels_total

    def usable_for(self) -> list[str]:
        """What the split can serve: scribble training, evaluation / full supervision."""
        uses = []
        if self.ids and self.files["scribble"] == self.ids:
            uses.append("scribble training")
        if self.ids and self.files["mask"] == self.ids:
            uses.append("evaluation and full supervision")
        return uses

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of the report."""
        return {
            "split": self.name,
            "ids": self.ids,
            "volumes": self.volumes,
            "slices": self.slices,
            "volumetric": self.volumetric,
            "shapes": {"x".join(map(str, k)): v for k, v in self.shapes.items()},
            "spacings": {
                ("unknown" if k is None else "x".join(f"{s:g}" for s in k)): v
                for k, v in self.spacings.items()
            },
            "intensity": None if self.intensity is None else list(self.intensity),
            "files": dict(self.files),
            "classes": {k: sorted(v) for k, v in self.classes.items()},
            "labeled_fraction": self.labeled_fraction,
            "usable_for": self.usable_for(),
            "problems": [
                {"path": str(p.path), "id": p.id, "message": p.message} for p in self.problems
            ],
            "duplicates": [
                {"members": [list(m) for m in d.members], "images": d.images}
                for d in self.duplicates
            ],
        }


def _label_values(array: np.ndarray) -> set[int]:
    return {int(v) for v in np.unique(array) if v != IGNORE_INDEX}


def check_split(
    root: str | Path,
    split: str,
    num_classes: int | None = None,
    slice_axis: int | None = None,
) -> SplitReport:
    """Read every file of ``split`` and report what it holds and every problem.

    Args:
        root: a folder dataset.
        split: the name of ``splits/<split>.txt``.
        num_classes: ``K`` to check label values against; ``None`` = the lines of
            ``classes.txt`` (a missing ``classes.txt`` is then a problem of the split).
        slice_axis: volumes: the slice axis (``None`` = the through-plane axis).
    """
    root = Path(root)
    report = SplitReport(split)
    split_file = root / "splits" / f"{split}.txt"
    if not split_file.is_file():
        report.problems.append(DataProblem(split_file, "", "split file not found"))
        return report
    if num_classes is None:
        try:
            num_classes = len(read_classes(root / "classes.txt"))
        except DataError as exc:
            report.problems.append(DataProblem(root / "classes.txt", "", str(exc)))
            num_classes = 255
    ids = read_split(split_file)
    report.ids = len(ids)
    index = {role: index_dir(root / folder) for role, folder in (("image", "images"), *_ROLES)}
    kinds = set()
    low, high = np.inf, -np.inf
    labels_of = {role: {i: _label_file(i, index, role) for i in ids} for role, _ in _ROLES}
    for role, _ in _ROLES:
        report.files[role] = sum(path is not None for path in labels_of[role].values())
    for sample_id in ids:
        image_path = index["image"].get(sample_id)
        if image_path is None:
            where = root / "images" / f"{sample_id}.*"
            report.problems.append(DataProblem(where, sample_id, "missing image file"))
            continue
        kinds.add(is_volume_file(image_path))
        try:
            shape, image, spacing = _read_image(image_path, slice_axis)
        except DataError as exc:
            report.problems.append(DataProblem(image_path, sample_id, str(exc)))
            continue
        report.shapes[shape] += 1
        report.spacings[spacing] += 1
        report.slices += shape[0] if is_volume_file(image_path) else 1
        if image.size:
            image_low, image_high = float(image.min()), float(image.max())
            low, high = min(low, image_low), max(high, image_high)
            if image_low != image_high:  # constant (blank) images are alike by nature
                report.image_digests[sample_id] = _pixel_digest(image)
        for role, _ in _ROLES:
            path = labels_of[role][sample_id]
            if path is None:
                continue
            try:
                labels = _read_labels(path, role, slice_axis, image_path)
                if labels.shape[-2:] != shape[-2:] or (labels.ndim == 3 and labels.shape != shape):
                    raise DataError(
                        f"{role} has shape {labels.shape} but its image {image_path} {shape}"
                    )
                check_label_values(labels, num_classes, path, role)
            except DataError as exc:
                report.problems.append(DataProblem(path, sample_id, str(exc)))
                continue
            report.classes[role] |= _label_values(labels)
            if role == "scribble":
                report.labeled_pixels += int((labels != IGNORE_INDEX).sum())
                report.scribbled_pixels_total += labels.size
    report.volumetric = True in kinds
    report.volumes = len(ids) if report.volumetric else len({volume_key(i)[0] for i in ids})
    if len(kinds) > 1:
        report.problems.append(
            DataProblem(split_file, "", "mixes volume files and 2D images; split them")
        )
    if np.isfinite(low):
        report.intensity = (low, high)
    for role, folder in _ROLES:
        count = report.files[role]
        if 0 < count < report.ids:
            missing = next(i for i in ids if labels_of[role][i] is None)
            report.problems.append(
                DataProblem(
                    root / folder / f"{missing}.*",
                    missing,
                    f"only {count} of {report.ids} ids of split {split!r} have a {role} file: "
                    f"the {role}s of this split are not usable (first missing shown)",
                )
            )
    return report


def _pixel_digest(array: np.ndarray) -> str:
    """A digest of the pixels, the shape and the dtype: equal for identical images."""
    digest = hashlib.blake2b(f"{array.shape}{array.dtype}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def find_duplicate_images(reports: Sequence[SplitReport]) -> list[DuplicateImages]:
    """The groups of volumes (2D images: grouped by id pattern) that share identical images,
    within and across the splits of ``reports``; identical images within one volume and
    constant images (blank slices) are left out."""
    where: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for report in reports:
        for sample_id, digest in report.image_digests.items():
            volume = sample_id if report.volumetric else volume_key(sample_id)[0]
            where[digest].append((report.name, volume))
    shared: Counter = Counter()
    for members in where.values():
        volumes = tuple(sorted(set(members)))
        if len(volumes) > 1:
            shared[volumes] += 1
    return [DuplicateImages(members, images) for members, images in sorted(shared.items())]


def _label_file(sample_id: str, index: dict[str, dict[str, Path]], role: str) -> Path | None:
    """The ``role`` file of ``sample_id``: in its folder, else an ``.h5`` image holding it."""
    path = index[role].get(sample_id)
    image = index["image"].get(sample_id)
    if path is None and image is not None and image.suffix.lower() in (".h5", ".hdf5"):
        path = image if _h5_has(image, role) else None
    return path


def _read_image(
    path: Path, slice_axis: int | None
) -> tuple[tuple[int, ...], np.ndarray, tuple[float, ...] | None]:
    if is_volume_file(path):
        volume = read_volume(path, "image", slice_axis)
        return volume.array.shape, volume.array, volume.spacing
    image = read_image(path)
    return image.shape, image, None


def _read_labels(path: Path, role: str, slice_axis: int | None, image: Path) -> np.ndarray:
    if is_volume_file(path):
        axis = slice_axis
        if axis is None:  # the image's axis, so that label and image slices correspond
            axis = through_plane_axis(*volume_shape(image, "image"))
        return read_volume(path, role, axis).array
    return read_label(path, role)


def _h5_has(path: Path, role: str) -> bool:
    from weakseg.data.volumes import H5_KEYS

    try:
        import h5py

        with h5py.File(path, "r") as handle:
            return H5_KEYS[role] in handle
    except (ImportError, OSError):
        return False


def check_dataset(root: str | Path, slice_axis: int | None = None) -> list[SplitReport]:
    """:func:`check_split` of every ``splits/*.txt`` of ``root`` (sorted by name), with the
    identical images found across them (:attr:`SplitReport.duplicates`).

    Raises:
        DataError: ``root`` or its ``splits/`` folder does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    splits = sorted(p.stem for p in (root / "splits").glob("*.txt"))
    if not splits:
        raise DataError(f"no split files in {root / 'splits'} (one id per line, <name>.txt)")
    reports = [check_split(root, name, slice_axis=slice_axis) for name in splits]
    for duplicate in find_duplicate_images(reports):
        for report in reports:
            if any(split == report.name for split, _ in duplicate.members):
                report.duplicates.append(duplicate)
    return reports


def check_split_labels(root: str | Path, split: str, num_classes: int) -> list[DataProblem]:
    """The label files (scribbles and masks) of ``split`` whose values are not class ids
    ``0..num_classes-1`` or 255, or that cannot be read; fast: PNGs by their histogram, no
    image is read.

    Ids without a label file are not problems here (files are needed only where used: see
    :class:`~weakseg.data.FolderDataset`). Raises DataError when the split file is missing.

    Example::

        >>> problems = check_split_labels("data/acdc-scribble", "train", 4)
        >>> if problems: raise DataError(str(problems[0]))
    """
    root = Path(root)
    split_file = root / "splits" / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"split file not found: {split_file}")
    problems = []
    index = {role: index_dir(root / folder) for role, folder in (("image", "images"), *_ROLES)}
    for role, _ in _ROLES:
        for sample_id in read_split(split_file):
            path = _label_file(sample_id, index, role)  # an .h5 image may hold its labels
            if path is None:
                continue
            try:
                if is_volume_file(path):
                    values = np.unique(read_volume(path, role, 0).array)
                else:
                    values = _png_values(path, role)
                bad = [int(v) for v in values if num_classes <= v != IGNORE_INDEX]
                if bad:
                    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
                    raise DataError(
                        f"{role} file {path} holds label values {{{shown}}} >= "
                        f"num_classes={num_classes} (valid: 0..{num_classes - 1} and 255 = "
                        f"unlabeled){unlabeled_hint(bad, num_classes, role)}"
                    )
            except DataError as exc:
                problems.append(DataProblem(path, sample_id, str(exc)))
    return problems


def _png_values(path: Path, role: str) -> np.ndarray:
    """The distinct values of a label image (from PIL's histogram for 8-bit modes)."""
    try:
        with Image.open(path) as image:
            if image.mode in ("L", "P"):
                counts = np.asarray(image.histogram()[:256])
                return np.flatnonzero(counts).astype(np.int64)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"unreadable or truncated {role} file {path}: {exc}") from None
    return np.unique(read_label(path, role))
