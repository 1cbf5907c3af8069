"""Convert the original ScribbleSup XML scribble annotations to label PNGs, in pure Python.

An annotation file looks like::

    <annotation>
      <size><width>W</width><height>H</height></size>
      <polygon><tag>CLASS</tag><point><X>x</X><Y>y</Y></point> ... </polygon>
      ...
    </annotation>

Each ``<polygon>`` is an open polyline (a scribble). It is rasterized with Bresenham segments
between consecutive points (coordinates rounded, 0-based pixel indices, clipped to the image)
and then thickened to ``width`` px with a square brush; later polylines overwrite earlier ones.
Tags are matched case-insensitively against ``class_names``; any other name (PASCAL-Context
classes such as sky, grass, wall) becomes background (id 0). Unlabeled pixels are 255.
"""

from __future__ import annotations

import itertools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from weakseg.data.io import IGNORE_INDEX, DataError, write_label

__all__ = ["VOC_CLASSES", "convert_xml_dir", "parse_scribble_xml", "rasterize_scribble_xml"]

logger = logging.getLogger("weakseg.data")

# The names the ScribbleSup files use for the 21 PASCAL VOC classes, in id order.
VOC_CLASSES: tuple[str, ...] = (
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
)  # fmt: skip


def _number(element: ET.Element, tag: str, path: Path, where: str) -> float:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"scribble XML {path}: {where} has no <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise DataError(
            f"scribble XML {path}: {where} has a non-numeric <{tag}>: {child.text.strip()!r}"
        ) from None


def parse_scribble_xml(path: str | Path) -> tuple[tuple[int, int], list[tuple[str, np.ndarray]]]:
    """Parse one annotation: ``((H, W), [(tag, points (P, 2) as (x, y)), ...])``.

    Raises:
        DataError: missing or malformed file, missing size, point without numeric X / Y.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing scribble XML file: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"scribble XML {path} is not well-formed XML: {exc}") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"scribble XML {path} has no <size> element")
    width = _number(size, "width", path, "<size>")
    height = _number(size, "height", path, "<size>")
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise DataError(f"scribble XML {path}: invalid image size {width}x{height}")
    polygons = []
    for i, polygon in enumerate(root.iter("polygon")):
        tag_element = polygon.find("tag")
        tag = (tag_element.text or "").strip() if tag_element is not None else ""
        if not tag:
            raise DataError(f"scribble XML {path}: polygon {i} has no <tag>")
        points = [
            (
                _number(point, "X", path, f"polygon {i} point {j}"),
                _number(point, "Y", path, f"polygon {i} point {j}"),
            )
            for j, point in enumerate(polygon.findall("point"))
        ]
        if points:
            polygons.append((tag, np.asarray(points, dtype=np.float64)))
    return (int(height), int(width)), polygons


def _line(y0: int, x0: int, y1: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Bresenham pixels from (y0, x0) to (y1, x1), both ends included."""
    steps = max(abs(y1 - y0), abs(x1 - x0))
    if steps == 0:
        return np.array([y0]), np.array([x0])
    t = np.arange(steps + 1) / steps
    # rounding half away from zero on a uniform parameterization is Bresenham's choice of pixels
    ys = np.floor(y0 + (y1 - y0) * t + 0.5).astype(np.int64)
    xs = np.floor(x0 + (x1 - x0) * t + 0.5).astype(np.int64)
    return ys, xs


def rasterize_scribble_xml(
    path: str | Path, class_names: Sequence[str] = VOC_CLASSES, width: int = 3
) -> np.ndarray:
    """Rasterize one annotation into a label map ``uint8 [H, W]`` (255 = unlabeled).

    Args:
        path: the XML file.
        class_names: names in id order; unknown tags become id 0 (background).
        width: stroke width in px (square brush; 3 as in the original scribbles).
    """
    if int(width) != width or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    (height, image_width), polygons = parse_scribble_xml(path)
    ids = {name.lower(): k for k, name in enumerate(class_names)}
    label = np.full((height, image_width), IGNORE_INDEX, dtype=np.uint8)
    brush = np.ones((width, width), dtype=bool)
    for tag, points in polygons:
        k = ids.get(tag.lower(), 0)
        if tag.lower() not in ids:
            logger.debug("%s: tag %r is not a known class; drawn as background", path, tag)
        xy = np.rint(points).astype(np.int64)
        xy[:, 0] = np.clip(xy[:, 0], 0, image_width - 1)
        xy[:, 1] = np.clip(xy[:, 1], 0, height - 1)
        stroke = np.zeros(label.shape, dtype=bool)
        if len(xy) == 1:
            stroke[xy[0, 1], xy[0, 0]] = True
        for (xa, ya), (xb, yb) in itertools.pairwise(xy):
            ys, xs = _line(int(ya), int(xa), int(yb), int(xb))
            stroke[ys, xs] = True
        if width > 1:
            # a width-w square centred on each pixel (for even w, one more pixel down / right)
            stroke = ndi.binary_dilation(stroke, structure=brush, origin=-((width - 1) % 2))
        label[stroke] = k
    return label


def convert_xml_dir(
    xml_dir: str | Path,
    out_dir: str | Path,
    class_names: Sequence[str] = VOC_CLASSES,
    width: int = 3,
    skip_bad: bool = False,
) -> tuple[int, list[tuple[Path, str]]]:
    """Convert every ``*.xml`` of ``xml_dir`` to ``out_dir/<stem>.png``.

    Returns:
        ``(converted, problems)``: the number of files written and, with ``skip_bad``,
        ``(file, message)`` for each bad file skipped (also logged).

    Raises:
        DataError: ``xml_dir`` is missing or holds no XML file, or a bad file when not ``skip_bad``.
    """
    xml_dir, out_dir = Path(xml_dir), Path(out_dir)
    if not xml_dir.is_dir():
        raise DataError(f"XML folder not found: {xml_dir}")
    files = sorted(p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml")
    if not files:
        raise DataError(f"no .xml file in {xml_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    converted, problems = 0, []
    for path in files:
        try:
            label = rasterize_scribble_xml(path, class_names, width)
        except DataError as exc:
            if not skip_bad:
                raise
            logger.warning("skipping: %s", exc)
            problems.append((path, str(exc)))
            continue
        write_label(out_dir / f"{path.stem}.png", label)
        converted += 1
    return converted, problems
