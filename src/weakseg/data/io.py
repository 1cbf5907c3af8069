"""Reading and writing images and label maps, with errors that name the file and the problem.

Images come back as ``float32`` arrays ``[C, H, W]`` in the 0-255 range (``C`` = 1 for gray,
3 for colour); 16-bit images are mapped linearly from 0-65535 to 0-255 (so every image of a
dataset shares one intensity scale, which the regularizers' ``sigma_rgb`` relies on). Label maps
come back as ``uint8`` arrays ``[H, W]`` holding class ids, ``255`` = unlabeled; palette PNGs
(PASCAL VOC) are read by index, not by colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from weakseg.errors import DataError, MissingFileError

__all__ = [
    "IGNORE_INDEX",
    "VOC_PALETTE",
    "DataError",
    "check_label_values",
    "check_same_size",
    "read_image",
    "read_label",
    "unlabeled_hint",
    "write_label",
]

IGNORE_INDEX = 255


def _voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class ids): uint8 ``[256, 3]``."""
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


#: The PASCAL VOC colour map, uint8 ``[256, 3]`` (class 0 black, 255 light gray): written label
#: PNGs look like those of VOC and ScribbleSup. Read-only.
VOC_PALETTE: np.ndarray = _voc_palette()
VOC_PALETTE.setflags(write=False)


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise MissingFileError(f"missing {what} file: {path}")
    try:
        image = Image.open(path)
        image.load()  # decode now: truncated files fail here, not later in a worker
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"unreadable or truncated {what} file {path}: {exc}") from None
    return image


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Read an image as ``float32 [C, H, W]`` in 0-255.

    Args:
        path: any PIL-readable file: gray or colour, 8 or 16 bit (an alpha channel is dropped).
        channels: ``1`` or ``3`` to convert, ``None`` to keep the file's own (1 for gray, 3 else).

    Raises:
        DataError: the file is missing (a :class:`~weakseg.errors.MissingFileError`),
            unreadable or truncated.
    """
    path = Path(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    image = _open(path, "image")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (PIL may report 16-bit PNGs as "I"): one fixed scale for every file
        array = np.asarray(image, dtype=np.float32)
        if image.mode != "F":
            array = array * (255.0 / 65535.0)
        array = array[None]  # (1, H, W)
    else:
        gray = image.mode in ("1", "L", "LA") or (image.mode == "P" and _palette_is_gray(image))
        image = image.convert("L" if gray else "RGB")
        array = np.asarray(image, dtype=np.float32)
        array = array[None] if gray else array.transpose(2, 0, 1)  # (C, H, W)
    if channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    elif channels == 1 and array.shape[0] == 3:
        # ITU-R 601-2 luma, as PIL's convert("L")
        array = (0.299 * array[0] + 0.587 * array[1] + 0.114 * array[2])[None]
    return np.ascontiguousarray(array, dtype=np.float32)


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def read_label(path: str | Path, what: str = "label") -> np.ndarray:
    """Read a label map as ``uint8 [H, W]`` of class ids (255 = unlabeled).

    Accepts single-channel files: 8-bit gray, palette (values are the palette indices, as in
    PASCAL VOC), or 16-bit with values below 256.

    Raises:
        DataError: missing (a :class:`~weakseg.errors.MissingFileError`), unreadable or
            truncated file, a colour (RGB) file, or values > 255.
    """
    path = Path(path)
    image = _open(path, what)
    if image.mode in ("L", "P", "1"):
        return np.array(image, dtype=np.uint8)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(
                f"{what} file {path} holds values outside 0-255 "
                f"(min {array.min()}, max {array.max()}); class ids must be 0..K-1 or 255"
            )
        return array.astype(np.uint8)
    raise DataError(
        f"{what} file {path} has mode {image.mode!r}; label maps must be single-channel "
        "(8-bit gray or palette PNG holding class ids, 255 = unlabeled)"
    )


def check_label_values(label: np.ndarray, num_classes: int, path: str | Path, what: str) -> None:
    """Raise DataError when ``label`` holds a value ``>= num_classes`` other than 255."""
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise DataError(
            f"{what} file {path} holds label values {{{shown}}} >= num_classes={num_classes} "
            f"(valid: 0..{num_classes - 1} and 255 = unlabeled) in {int(bad.sum())} pixels"
            f"{unlabeled_hint(values, num_classes, what)}"
        )


def unlabeled_hint(values: list[int], num_classes: int, what: str) -> str:
    """A hint for scribbles whose only bad value is ``K``: WSL4MIS marks unlabeled pixels so."""
    if what == "scribble" and list(values) == [num_classes]:
        return f"; value {num_classes} = K is how WSL4MIS marks unlabeled pixels: map it to 255"
    return ""


def check_same_size(
    image_hw: tuple[int, int],
    other_hw: tuple[int, int],
    image_path: Path,
    other_path: Path,
    what: str,
) -> None:
    """Raise DataError when a label map's size differs from its image's (sizes given as H, W)."""
    if tuple(image_hw) != tuple(other_hw):
        raise DataError(
            f"size mismatch: image {image_path} is {image_hw[1]}x{image_hw[0]} (WxH) but "
            f"{what} {other_path} is {other_hw[1]}x{other_hw[0]}"
        )


def write_label(path: str | Path, label: np.ndarray, palette: bool = True) -> None:
    """Write a label map ``[H, W]`` (values 0-255) as an 8-bit PNG (VOC palette by default)."""
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(f"label must have shape (H, W), got {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"label values must be in 0..255, got min {array.min()} max {array.max()}")
    image = Image.fromarray(array.astype(np.uint8))
    if palette:
        image.putpalette(VOC_PALETTE.ravel().tolist())  # mode L -> P, values kept as indices
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
