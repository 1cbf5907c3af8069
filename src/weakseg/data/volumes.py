"""Medical volumes in the folder format: NIfTI (``.nii``, ``.nii.gz``, read with nibabel) and HDF5
(``.h5``, read with h5py, WSL4MIS keys ``image``, ``scribble``, ``label``).

A volume file holds one 3D array; training samples 2D slices of it along one axis, the slice
axis (:func:`through_plane_axis`: the axis of the largest voxel spacing, else the one with the
fewest voxels). Arrays are kept as ``[S, H, W]`` with the slice axis moved first;
``spacing`` is then ``(s, h, w)`` in mm, or ``None`` when the file does not say (HDF5 without
a ``spacing`` attribute).

Intensities are used as stored unless ``percentiles=(low, high)`` is given to
:func:`read_volume`: the volume is clipped to those percentiles of its own values and scaled
to 0-255 (:func:`scale_intensity`), the range the regularizers' ``sigma_rgb`` is meant for.

2D slice datasets (one PNG per slice, e.g. ACDC ``patient001_frame01_slice_3``) are grouped
into volumes by an id pattern (:func:`volume_key`, :data:`DEFAULT_VOLUME_PATTERN`).

nibabel and h5py are optional (``pip install weakseg[medical]``); they are imported when a file
needs them.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weakseg.errors import DataError

__all__ = [
    "DEFAULT_VOLUME_PATTERN",
    "H5_KEYS",
    "VOLUME_SUFFIXES",
    "Volume",
    "VolumeCache",
    "check_volume_pattern",
    "file_id",
    "is_volume_file",
    "read_volume",
    "scale_intensity",
    "through_plane_axis",
    "volume_key",
    "volume_shape",
    "write_label_volume",
]

#: File name endings read as volumes (lower case).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".h5", ".hdf5")
#: The HDF5 dataset key of each role (the keys of the WSL4MIS preprocessed sets).
H5_KEYS: dict[str, str] = {"image": "image", "scribble": "scribble", "mask": "label"}
#: Groups ``<volume>_slice_<n>`` / ``<volume>_slice<n>`` ids; other ids are volumes of one slice.
DEFAULT_VOLUME_PATTERN = r"^(?P<volume>.+?)_slice_?(?P<slice>\d+)$"


def file_id(path: str | Path) -> str:
    """The id of a data file: its name without the extension (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_volume_file(path: str | Path) -> bool:
    """Whether ``path`` names a volume (NIfTI or HDF5) rather than a 2D image."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


@dataclass(frozen=True)
class Volume:
    """One volume, slice axis first.

    Attributes:
        array: ``[S, H, W]`` (float32 for images, uint8 class ids for labels).
        spacing: ``(s, h, w)`` voxel size in mm, or ``None`` when unknown.
        axis: the slice axis in the file's own array (where ``S`` came from).
        path: the file.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] | None
    axis: int
    path: Path


def through_plane_axis(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> int:
    """The axis to slice along: the one of the largest spacing when that maximum is unique,
    else the one with the fewest voxels (the last of equals).

    >>> through_plane_axis((216, 256, 10), (1.5, 1.5, 10.0))
    2
    >>> through_plane_axis((12, 256, 224), None)
    0
    """
    if len(shape) != 3:
        raise ValueError(f"a volume has 3 axes, got shape {tuple(shape)}")
    if spacing is not None:
        largest = max(spacing)
        if sum(abs(s - largest) <= 1e-6 * largest for s in spacing) == 1:
            return int(np.argmax(spacing))
    fewest = min(shape)
    return max(axis for axis, size in enumerate(shape) if size == fewest)


def _medical_reader(name: str, path: Path, kind: str) -> Any:
    """The optional module ``name`` (h5py, nibabel) that reads ``path``, a ``kind`` file;
    DataError naming the extra that installs it when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(
            f"{path} is {kind} file; reading it needs {name} (pip install 'weakseg[medical]')"
        ) from None


def _h5_open(path: Path, what: str) -> Any:
    h5py = _medical_reader("h5py", path, "an HDF5")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"unreadable {what} file {path}: {exc}") from None


def _nifti_load(path: Path, what: str) -> Any:
    nibabel = _medical_reader("nibabel", path, "a NIfTI")
    try:
        return nibabel.load(str(path))
    except Exception as exc:  # nibabel raises several unrelated types for broken files
        raise DataError(f"unreadable {what} file {path}: {exc}") from None


def _h5_dataset(handle: Any, path: Path, key: str, what: str) -> Any:
    if key not in handle:
        raise DataError(
            f"{what} file {path} has no dataset {key!r} (it holds: {', '.join(handle.keys())})"
        )
    return handle[key]


def _h5_spacing(handle: Any, dataset: Any) -> tuple[float, ...] | None:
    for attrs in (dataset.attrs, handle.attrs):
        if "spacing" in attrs:
            return tuple(float(s) for s in np.asarray(attrs["spacing"]).ravel())
    return None


def volume_shape(
    path: str | Path, what: str = "image"
) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    """The array shape and voxel spacing (mm, or ``None``) of a volume file, from its header
    only. ``what`` is the role (``image``, ``scribble``, ``mask``): the HDF5 key it reads.

    Raises:
        DataError: missing or unreadable file, no 3D array under the key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    if path.name.lower().endswith((".h5", ".hdf5")):
        with _h5_open(path, what) as handle:
            dataset = _h5_dataset(handle, path, H5_KEYS[what], what)
            shape, spacing = tuple(dataset.shape), _h5_spacing(handle, dataset)
    else:
        image = _nifti_load(path, what)
        shape = tuple(int(s) for s in image.shape)
        spacing = tuple(float(z) for z in image.header.get_zooms()[: len(shape)])
    shape = _squeeze_shape(shape, path, what)
    if spacing is not None and len(spacing) != 3:
        spacing = None  # a 4D header with a squeezed axis, or a malformed attribute
    return shape, spacing


def _squeeze_shape(shape: tuple[int, ...], path: Path, what: str) -> tuple[int, ...]:
    if len(shape) == 4 and shape[-1] == 1:  # a 4D NIfTI with one time point
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{what} file {path} holds an array of shape {shape}; expected 3D")
    return shape


def read_volume(
    path: str | Path,
    what: str = "image",
    axis: int | None = None,
    percentiles: tuple[float, float] | None = None,
) -> Volume:
    """Read a volume file, slice axis first.

    Args:
        path: ``.nii``, ``.nii.gz`` or ``.h5`` (the dataset :data:`H5_KEYS` ``[what]``, spacing
            from a ``spacing`` attribute of it or of the file when present).
        what: ``"image"``, ``"scribble"`` or ``"mask"``: images come back float32 (intensities
            as stored, or scaled with ``percentiles``), labels uint8 class ids (255 =
            unlabeled), checked to be integers in 0-255.
        axis: the slice axis of the stored array; ``None`` = :func:`through_plane_axis`.
        percentiles: images only: clip to these percentiles of the volume and scale to 0-255.

    Raises:
        DataError: missing or unreadable file, not 3D, labels that are not integers in 0-255.
    """
    path = Path(path)
    shape, spacing = volume_shape(path, what)
    if path.name.lower().endswith((".h5", ".hdf5")):
        with _h5_open(path, what) as handle:
            array = np.asarray(_h5_dataset(handle, path, H5_KEYS[what], what)[()])
    else:
        image = _nifti_load(path, what)
        try:
            array = np.asanyarray(image.dataobj)
        except Exception as exc:  # truncated gzip streams fail here
            raise DataError(f"unreadable or truncated {what} file {path}: {exc}") from None
    array = array.reshape(shape)
    if axis is None:
        axis = through_plane_axis(shape, spacing)
    if not -3 <= axis < 3:
        raise DataError(f"slice axis {axis} is out of range for the 3D {what} file {path}")
    axis %= 3
    array = np.moveaxis(array, axis, 0)
    if spacing is not None:
        spacing = (spacing[axis], *(s for i, s in enumerate(spacing) if i != axis))
    if what == "image":
        array = np.ascontiguousarray(array, dtype=np.float32)
        if percentiles is not None:
            array = scale_intensity(array, percentiles)
    else:
        array = _label_array(array, path, what)
    return Volume(array, spacing, axis, path)


def _label_array(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)):
            raise DataError(f"{what} file {path} holds non-integer values; class ids must be ints")
    elif array.dtype.kind not in "iub":
        raise DataError(f"{what} file {path} holds {array.dtype} values; class ids must be ints")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(
            f"{what} file {path} holds values outside 0-255 (min {array.min()}, max "
            f"{array.max()}); class ids must be 0..K-1 or 255"
        )
    return np.ascontiguousarray(array, dtype=np.uint8)


def scale_intensity(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip ``array`` to its ``percentiles = (low, high)`` (in 0-100) and map that range
    linearly to 0-255 (float32; a constant array becomes 0).

    >>> scale_intensity(np.array([0.0, 1.0, 2.0, 100.0]), (0, 50)).tolist()
    [0.0, 170.0, 255.0, 255.0]
    """
    low, high = (float(p) for p in percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"percentiles must be (low, high) with 0 <= low < high <= 100, got "
            f"{tuple(percentiles)!r}"
        )
    lo, hi = np.percentile(array, [low, high])
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.float32)
    scaled = (np.clip(array, lo, hi) - lo) * (255.0 / (hi - lo))
    return scaled.astype(np.float32)


class VolumeCache:
    """The last volumes read, up to ``max_bytes`` in all (least recently used dropped first).

    Training draws slices of many volumes in random order; reading a ``.nii.gz`` decompresses
    all of it, so whole volumes are kept. Each DataLoader worker has its own cache.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, Volume] = OrderedDict()
        self._bytes = 0

    def get(
        self,
        path: Path,
        what: str,
        axis: int | None,
        percentiles: tuple[float, float] | None,
    ) -> Volume:
        """:func:`read_volume` of these arguments, from the cache when there."""
        key = (str(path), what, axis, None if percentiles is None else tuple(percentiles))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        volume = read_volume(path, what, axis, percentiles)
        self._items[key] = volume
        self._bytes += volume.array.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.array.nbytes
        return volume

    def __getstate__(self) -> dict[str, Any]:  # workers start empty rather than copying it
        return {"max_bytes": self.max_bytes, "_items": OrderedDict(), "_bytes": 0}


def volume_key(sample_id: str, pattern: str | None = None) -> tuple[str, int | None]:
    """``(volume id, slice index or None)`` of a 2D sample id by the regex ``pattern``
    (default :data:`DEFAULT_VOLUME_PATTERN`).

    The volume is the group named ``volume`` (else the first group), the slice the group named
    ``slice`` when there is one. An id the pattern does not match is a volume of its own.

    >>> volume_key("patient001_frame01_slice_3")
    ('patient001_frame01', 3)
    >>> volume_key("img_042", r"^(.+)_\\d+$")
    ('img', None)
    """
    regex = re.compile(DEFAULT_VOLUME_PATTERN if pattern is None else pattern)
    match = regex.match(sample_id)
    if match is None:
        return sample_id, None
    groups = match.groupdict()
    if "volume" in groups and groups["volume"] is not None:
        volume = groups["volume"]
    elif match.groups():
        volume = match.group(1)
    else:
        volume = match.group(0)
    position = groups.get("slice")
    return volume, (int(position) if position is not None and position.isdigit() else None)


def check_volume_pattern(pattern: str) -> str:
    """``pattern`` if it compiles, else ValueError naming it."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"volume_pattern {pattern!r} is not a valid regular expression: {exc}"
        ) from None
    return pattern


def write_label_volume(
    path: str | Path, slices: np.ndarray, reference: str | Path, axis: int
) -> Path:
    """Write a label volume as NIfTI with the affine and header of ``reference``.

    Args:
        path: output file (``.nii.gz`` or ``.nii``).
        slices: ``[S, H, W]`` class ids (0-255), the slices along ``axis`` in order.
        reference: the image volume they were predicted from (NIfTI: its affine and header are
            copied; HDF5: an identity affine with its spacing, if any, on the diagonal).
        axis: the slice axis of ``reference``'s array (:attr:`Volume.axis`).

    Raises:
        DataError: the slices do not fit ``reference``'s shape.
    """
    import nibabel

    path, reference = Path(path), Path(reference)
    shape, spacing = volume_shape(reference, "image")
    labels = np.moveaxis(np.asarray(slices, dtype=np.uint8), 0, axis)
    if labels.shape != shape:
        raise DataError(
            f"prediction of shape {labels.shape} does not fit the volume {reference} of shape "
            f"{shape}"
        )
    if reference.name.lower().endswith((".nii", ".nii.gz")):
        source = nibabel.load(str(reference))
        header = source.header.copy()
        header.set_data_dtype(np.uint8)
        if len(header.get_data_shape()) != 3:
            header.set_data_shape(shape)
        image = nibabel.Nifti1Image(labels, source.affine, header)
    else:
        affine = np.diag([*(spacing or (1.0, 1.0, 1.0)), 1.0])
        image = nibabel.Nifti1Image(labels, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path
