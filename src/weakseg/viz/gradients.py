r"""The paper's Fig. 1 for any image: each regularizer's gradient :math:`\partial R / \partial S_k`.

Tang et al. (ECCV 2018, section 2) train with partial cross-entropy on the scribbles plus a
regularizer :math:`R(S)` of the softmax output S, and show (Fig. 1) that its gradient with respect
to S already outlines the objects: a negative :math:`\partial R / \partial S_k` (red) asks for
more of class k at a pixel, a positive one (yellow) for less. For the dense CRF loss with the
affinity normalization, :math:`\partial R / \partial S_k = (W\mathbf 1 - 2 W S_k) /
\mathbf 1^\top W \mathbf 1`; kernel cut's gradient is that of the CRF plus ``gamma`` times that
of the normalized cut. The figure shows by default the part of the gradient that a softmax output
feels, its mean over the classes removed (``tangent`` in :func:`regularizer_gradients`).

S is a network's softmax output (:func:`network_probs`) or, without a network, the softmax of a
logit field fitted to the scribbles by partial cross-entropy alone (:func:`scribble_probs`): the
scribbled classes on the scribbles, about uniform elsewhere, i.e. the state in which the
regularizer is the only signal that reaches the unlabeled pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from weakseg.data.transforms import normalize
from weakseg.engine.evaluate import predict_probs
from weakseg.interactive import logit_field_segmentation
from weakseg.losses import DenseCRFLoss, GridPottsLoss, KernelCutLoss, NormalizedCutLoss
from weakseg.viz import GRADIENT_LOSSES
from weakseg.viz.render import (
    BACKGROUND,
    CLASS_COLOURS,
    GAP,
    MARGIN,
    TEXT,
    draw_gradient_legend,
    fit_size,
    font,
    gradient_rgb,
    image_rgb,
    panel,
    probability_rgb,
    scribble_rgb,
    soft_label_rgb,
)

__all__ = [
    "GRADIENT_LOSSES",
    "gradient_figure_size",
    "gradient_regularizers",
    "network_probs",
    "regularizer_gradients",
    "regularizer_title",
    "render_gradient_figure",
    "scribble_probs",
    "shown_classes",
]


_ROW_LABEL = 96  # left column: the row's class
_LINE = 16  # px per line of the title
_HEADER = 32  # column titles (two lines)
_LEGEND = 62  # the gradient colours (two lines) and a note
_MIN_WIDTH = 640  # room for the legend


def gradient_regularizers(
    losses: Sequence[str] = ("dense_crf", "normalized_cut", "kernel_cut"),
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    gamma: float = 0.1,
    backend: str = "lattice",
) -> dict[str, nn.Module]:
    """The regularizers of :data:`GRADIENT_LOSSES` named in ``losses``, with weight 1 and the
    affinity normalization (:class:`weakseg.losses.DenseCRFLoss` and the others).

    Args:
        losses: names among :data:`GRADIENT_LOSSES`, in the figure's order.
        sigma_rgb, sigma_xy: bandwidths of the Gaussian affinity (0-255 units, pixels);
            ``grid_potts`` uses ``sigma_rgb`` only.
        gamma: weight of the normalized cut inside kernel cut.
        backend: ``"lattice"`` (O(N)) or ``"exact"`` (O(N^2), tiny images).

    Returns:
        name -> loss module.

    Raises:
        ValueError: an unknown or repeated name, a bad bandwidth or backend.
    """
    modules: dict[str, nn.Module] = {}
    for name in losses:
        if name not in GRADIENT_LOSSES:
            raise ValueError(f"unknown regularizer {name!r}; choose from {list(GRADIENT_LOSSES)}")
        if name in modules:
            raise ValueError(f"regularizer {name!r} given twice")
        affinity = {"sigma_rgb": sigma_rgb, "sigma_xy": sigma_xy, "backend": backend}
        if name == "dense_crf":
            modules[name] = DenseCRFLoss(**affinity)
        elif name == "normalized_cut":
            modules[name] = NormalizedCutLoss(**affinity)
        elif name == "kernel_cut":
            modules[name] = KernelCutLoss(gamma=gamma, **affinity)
        else:
            modules[name] = GridPottsLoss(sigma_rgb=sigma_rgb)
    return modules


def regularizer_title(name: str, regularizer: nn.Module) -> str:
    """A column title for ``regularizer`` (kernel cut's says its ``gamma``)."""
    if name == "kernel_cut":
        return f"kernel cut\n(CRF + {regularizer.gamma:g} NC)"
    titles = {
        "dense_crf": "dense CRF",
        "normalized_cut": "normalized cut",
        "grid_potts": "grid Potts",
    }
    return titles.get(name, name)


def regularizer_gradients(
    regularizers: Mapping[str, nn.Module],
    image_raw: Tensor,
    probs: Tensor,
    *,
    tangent: bool = False,
) -> dict[str, Tensor]:
    r"""The gradient dR/dS of each regularizer at the soft segmentation ``probs``.

    With ``tangent``, the mean over the classes is removed at each pixel,

    .. math::
        g_k = \frac{\partial R}{\partial S_k} - \frac1K \sum_j \frac{\partial R}{\partial S_j},

    the gradient of R restricted to the simplex :math:`\sum_k S_k = 1`. The removed part is
    what a softmax cancels, and it depends on how R is written off the simplex (the dense CRF
    loss's ``"affinity"`` and ``"rloss"`` normalizations differ by :math:`W\mathbf 1` there):
    for the dense CRF, :math:`g_k \propto -2 (W S_k - W\mathbf 1 / K)`, negative where class k
    holds more than its 1/K share of a pixel's affinity. Without it, a nearly uniform S gives a
    map of one sign for every class.

    Args:
        regularizers: name -> loss module (e.g. :class:`weakseg.losses.DenseCRFLoss`).
        image_raw: Tensor[1, C, H, W] in 0-255.
        probs: Tensor[1, K, H, W] softmax probabilities.
        tangent: remove the mean over the classes (see above).

    Returns:
        name -> Tensor[K, H, W]: negative where the regularizer asks for more of class k.
    """
    gradients = {}
    for name, regularizer in regularizers.items():
        segmentation = probs.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(regularizer(image_raw, segmentation), segmentation)
        gradients[name] = grad[0] - grad[0].mean(dim=0) if tangent else grad[0]
    return gradients


def scribble_probs(
    image_raw: Tensor, scribbles: Tensor, num_classes: int, *, n_steps: int = 60, lr: float = 0.25
) -> Tensor:
    """S fitted to the scribbles by partial cross-entropy alone: the softmax of a free logit
    field after ``n_steps`` gradient-descent steps
    (:func:`weakseg.interactive.logit_field_segmentation` with ``weight=0``): the scribbled
    pixels sharpen towards their labels, the others stay uniform.

    Args:
        image_raw: Tensor[C, H, W] float, 0-255.
        scribbles: Tensor[H, W] int, class ids, 255 = unlabeled.
        num_classes: K.
        n_steps, lr: gradient-descent iterations (momentum 0.9) and step.

    Returns:
        Tensor[K, H, W] probabilities.
    """
    return logit_field_segmentation(
        image_raw,
        scribbles,
        weight=0.0,
        num_classes=num_classes,
        n_steps=n_steps,
        lr=lr,
        return_probs=True,
    )


@torch.no_grad()
def network_probs(
    model: nn.Module, image_raw: Tensor, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """S = the softmax output of ``model`` (eval mode) at the input's resolution.

    Args:
        model: the network; its device is used.
        image_raw: Tensor[C, H, W] float, 0-255, with the network's C.
        mean, std: the normalization of the network's training (0-1 units).

    Returns:
        Tensor[K, H, W] probabilities, on the model's device.
    """
    device = next(model.parameters()).device
    return predict_probs(model, normalize(image_raw, mean, std)[None].to(device))[0]


def shown_classes(scribbles: np.ndarray, probs: np.ndarray) -> list[int]:
    """The classes scribbled somewhere or most probable somewhere, in increasing order.

    Args:
        scribbles: ``[H, W]`` class ids, 255 = unlabeled.
        probs: ``[K, H, W]`` probabilities.
    """
    scribbled = set(np.unique(scribbles[scribbles != 255]).tolist())
    predicted = set(np.unique(probs.argmax(axis=0)).tolist())
    return sorted(int(k) for k in scribbled | predicted)


def gradient_figure_size(
    height: int,
    width: int,
    num_rows: int,
    num_regularizers: int,
    panel_size: int = 256,
    title_lines: int = 2,
) -> tuple[int, int]:
    """``(width, height)`` in px of :func:`render_gradient_figure` for an ``height x width``
    image, ``num_rows`` classes and ``num_regularizers`` gradient columns."""
    panel_width, panel_height = fit_size(height, width, panel_size)
    columns = max(3, 1 + num_regularizers)
    figure_width = 2 * MARGIN + _ROW_LABEL + columns * panel_width + (columns - 1) * GAP
    figure_height = (
        2 * MARGIN
        + title_lines * _LINE
        + GAP
        + 2 * _HEADER
        + (1 + num_rows) * (panel_height + GAP)
        + _LEGEND
    )
    return max(figure_width, _MIN_WIDTH), figure_height


def render_gradient_figure(
    image_raw: np.ndarray,
    scribbles: np.ndarray,
    probs: np.ndarray,
    gradients: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    classes: Sequence[int],
    title: str,
    panel_size: int = 256,
) -> Image.Image:
    """Draw Fig. 1 of the paper for one image: the input row, then one row per class k.

    The first row shows the image, its scribbles and S (class colours mixed by S_k); each row k
    of ``classes`` shows S_k (white = 1) and ``dR/dS_k`` of each regularizer (red negative,
    yellow positive, each map scaled to its own 99th percentile of ``|dR/dS_k|``).

    Args:
        image_raw: ``[C, H, W]`` intensities in 0-255 (C = 1 gray, 3 RGB).
        scribbles: ``[H, W]`` class ids, 255 = unlabeled.
        probs: ``[K, H, W]`` the segmentation S.
        gradients: column title -> ``[K, H, W]`` gradient dR/dS.
        class_names: the K class names.
        classes: the class ids k of the rows.
        title: the line(s) at the top.
        panel_size: px of the longer side of each panel.

    Returns:
        An RGB image of :func:`gradient_figure_size`.
    """
    height, width = scribbles.shape
    size = fit_size(height, width, panel_size)
    title_lines = title.count("\n") + 1
    figure = Image.new(
        "RGB",
        gradient_figure_size(height, width, len(classes), len(gradients), panel_size, title_lines),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(figure)
    large, small = font(13), font(11)
    draw.multiline_text((MARGIN, MARGIN), title, fill=TEXT, font=large, spacing=3)
    top = MARGIN + title_lines * _LINE + GAP

    def x_of(column: int) -> int:
        return MARGIN + _ROW_LABEL + column * (size[0] + GAP)

    image = image_rgb(image_raw)
    top_row = [image, scribble_rgb(image, scribbles), soft_label_rgb(probs)]
    for column, text in enumerate(["image", "scribbles", "S: class colours\nmixed by S_k"]):
        draw.multiline_text((x_of(column), top), text, fill=TEXT, font=small, spacing=2)
        figure.paste(panel(top_row[column], size), (x_of(column), top + _HEADER))
    top += _HEADER
    draw.text((MARGIN, top + size[1] // 2 - 7), "input", fill=TEXT, font=small)
    top += size[1] + GAP
    titles = ["S_k", *(f"dR/dS_k: {text}" for text in gradients)]
    for column, text in enumerate(titles):
        draw.multiline_text((x_of(column), top), text, fill=TEXT, font=small, spacing=2)
    top += _HEADER
    for index, k in enumerate(classes):
        y = top + index * (size[1] + GAP)
        label_y = y + size[1] // 2 - 14
        colour = tuple(int(c) for c in CLASS_COLOURS[k])
        box = (MARGIN, label_y + 1, MARGIN + 11, label_y + 12)
        draw.rectangle(box, fill=colour, outline=(120, 120, 120))
        draw.multiline_text(
            (MARGIN + 16, label_y),
            f"k = {k}" if class_names[k] == str(k) else f"k = {k}\n{class_names[k]}",
            fill=TEXT,
            font=small,
            spacing=2,
        )
        panels = [probability_rgb(probs[k]), *(gradient_rgb(g[k]) for g in gradients.values())]
        for column, rgb in enumerate(panels):
            figure.paste(panel(rgb, size), (x_of(column), y))
    y = top + len(classes) * (size[1] + GAP) + GAP
    y = draw_gradient_legend(draw, MARGIN, y, small, line_height=18)
    draw.text(
        (MARGIN + 60, y),
        "black: no push; brightness: |dR/dS_k| relative to its 99th percentile in each map",
        fill=TEXT,
        font=small,
    )
    return figure
