"""Drawing helpers shared by the figures (PIL only): colours, panels, signed maps, legends.

Arrays follow NumPy's image convention: ``[H, W, 3]`` uint8 for RGB, ``[H, W]`` for label maps
(class ids, 255 = unlabeled) and for scalar maps. Network-side images ``[C, H, W]`` in 0-255 are
turned into RGB by :func:`image_rgb`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from weakseg.engine.predict import palette

__all__ = [
    "BACKGROUND",
    "CLASS_COLOURS",
    "GAP",
    "MARGIN",
    "NEGATIVE",
    "PANEL",
    "POSITIVE",
    "TEXT",
    "Font",
    "draw_class_legend",
    "draw_gradient_legend",
    "draw_swatch",
    "fit_size",
    "font",
    "gradient_rgb",
    "image_rgb",
    "label_rgb",
    "panel",
    "probability_rgb",
    "scribble_rgb",
    "soft_label_rgb",
]

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

PANEL = 128  # px per image panel (the demo's)
GAP = 4  # px between panels
MARGIN = 8  # px around a figure
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _class_colours() -> np.ndarray:
    # The first classes in colours close to the synthetic objects' own (stripes warm, dots
    # green, speckle blue); the others as in PASCAL VOC; "unlabeled" (255) light gray.
    colours = palette().copy()
    colours[:4] = [[0, 0, 0], [245, 130, 40], [50, 200, 80], [60, 110, 245]]
    colours[255] = [200, 200, 200]
    return colours


CLASS_COLOURS: np.ndarray = _class_colours()  # uint8 [256, 3], indexed by class id
NEGATIVE = np.array([230.0, 20.0, 20.0])  # dR/dS_k < 0: raise S_k (the paper's red)
POSITIVE = np.array([255.0, 225.0, 0.0])  # dR/dS_k > 0: lower S_k (the paper's yellow)


def font(size: int) -> Font:
    """Pillow's default font at ``size`` px (its fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow < 10.1 or without FreeType: bitmap font
        return ImageFont.load_default()


def fit_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """``(width, height)`` of an ``height x width`` image scaled so its longer side is
    ``longest`` px (aspect ratio kept, each side at least 1 px)."""
    scale = longest / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def panel(rgb: np.ndarray, size: tuple[int, int] = (PANEL, PANEL)) -> Image.Image:
    """uint8 ``[H, W, 3]`` -> an image of ``size = (width, height)``: nearest-neighbour when
    enlarging (every pixel stays visible), area averaging when shrinking."""
    image = Image.fromarray(rgb)
    enlarging = size[0] >= image.width and size[1] >= image.height
    resample = Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
    return image.resize(size, resample)


def image_rgb(image_raw: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` intensities in 0-255 -> uint8 ``[H, W, 3]``: gray (or any channel count
    other than 3+) shown from its first channel, colour from its first three."""
    channels = image_raw[:3] if image_raw.shape[0] >= 3 else np.repeat(image_raw[:1], 3, axis=0)
    return np.clip(np.rint(channels), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def label_rgb(label: np.ndarray, outline: np.ndarray | None = None) -> np.ndarray:
    """Class colours of ``label [H, W]``, with ``outline`` pixels (bool) in white."""
    rgb = CLASS_COLOURS[label].copy()
    if outline is not None:
        rgb[outline] = 255
    return rgb


def soft_label_rgb(probs: np.ndarray) -> np.ndarray:
    """A soft segmentation ``[K, H, W]`` as the class colours mixed by their probabilities,
    ``sum_k S_k colour_k``: a confident pixel has its class's colour, an undecided one a blend."""
    colours = CLASS_COLOURS[: probs.shape[0]].astype(np.float64)  # (K, 3)
    mixed = np.einsum("khw,kc->hwc", probs.astype(np.float64), colours)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def probability_rgb(prob: np.ndarray) -> np.ndarray:
    """A map ``[H, W]`` of values in [0, 1] as gray levels (0 black, 1 white)."""
    gray = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def scribble_rgb(image: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """The image faded towards white, the scribbles drawn over it in their class colours."""
    faded = (0.35 * image.astype(np.float32) + 0.65 * 255).astype(np.uint8)
    labeled = scribbles != 255
    faded[labeled] = CLASS_COLOURS[scribbles[labeled]]
    return faded


def gradient_rgb(gradient: np.ndarray) -> np.ndarray:
    """A signed map ``[H, W]`` on black: negative in red, positive in yellow, brightness
    ``|g|`` relative to its 99th percentile (so one extreme pixel does not blank the rest)."""
    scale = float(np.percentile(np.abs(gradient), 99)) or 1.0
    magnitude = np.clip(np.abs(gradient) / scale, 0, 1)[..., None]
    colour = np.where((gradient < 0)[..., None], NEGATIVE, POSITIVE)
    return np.rint(magnitude * colour).astype(np.uint8)


def draw_swatch(
    draw: ImageDraw.ImageDraw, x: int, y: int, colour: Sequence[float], text: str, font: Font
) -> int:
    """A 12 px colour square at ``(x, y)`` followed by ``text``; returns the x where it ends."""
    draw.rectangle(
        (x, y + 1, x + 11, y + 12), fill=tuple(int(c) for c in colour), outline=(120, 120, 120)
    )
    draw.text((x + 16, y), text, fill=TEXT, font=font)
    return x + 16 + int(draw.textlength(text, font=font))


def draw_class_legend(
    draw: ImageDraw.ImageDraw, x: int, y: int, class_names: Sequence[str], font: Font
) -> int:
    """``classes: [] name [] name ...`` on one line from ``(x, y)``; returns the x where it ends."""
    draw.text((x, y), "classes:", fill=TEXT, font=font)
    x += 60
    for k, name in enumerate(class_names):
        x = draw_swatch(draw, x, y, CLASS_COLOURS[k], name, font) + 8
    return x


def draw_gradient_legend(
    draw: ImageDraw.ImageDraw, x: int, y: int, font: Font, line_height: int | None = None
) -> int:
    """The two colours of :func:`gradient_rgb` and what they mean, from ``(x, y)``: on one line,
    or one per line ``line_height`` px apart; returns the y below the legend."""
    draw.text((x, y), "dR/dS_k:", fill=TEXT, font=font)
    x += 60
    for colour, text in (
        (NEGATIVE, "dR/dS_k < 0: the regularizer pushes the network towards class k here"),
        (POSITIVE, "dR/dS_k > 0: it pushes away from class k"),
    ):
        end = draw_swatch(draw, x, y, colour, text, font)
        if line_height is None:
            x = end + 20
        else:
            y += line_height
    return y + 18 if line_height is None else y
