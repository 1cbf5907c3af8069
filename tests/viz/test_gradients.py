"""weakseg.viz.gradients: the gradients dR/dS against closed forms and autograd of brute-force
losses on tiny inputs, S from scribbles or a network, and the figure's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.data.transforms import normalize
from weakseg.viz import (
    gradient_regularizers,
    network_probs,
    regularizer_gradients,
    render_gradient_figure,
    scribble_probs,
)
from weakseg.viz.gradients import gradient_figure_size, regularizer_title, shown_classes
from weakseg.viz.render import NEGATIVE, POSITIVE

SIGMA_RGB, SIGMA_XY, GAMMA = 40.0, 2.5, 0.3


def _tiny(classes: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image [1, 3, 4, 5] (0-255), S [1, K, 4, 5] and the dense affinity W [20, 20]."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 4, 5, generator=generator, dtype=torch.float64) * 255
    probs = (2 * torch.randn(1, classes, 4, 5, generator=generator, dtype=torch.float64)).softmax(1)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    features = torch.cat(
        [
            torch.stack([rows, cols]).double().reshape(2, -1) / SIGMA_XY,
            image[0].reshape(3, -1) / SIGMA_RGB,
        ]
    ).T  # (N, 5): one row per pixel, row-major
    w = torch.exp(-0.5 * torch.cdist(features, features).square())  # self term included
    return image, probs, w


def test_dense_crf_gradient_is_the_closed_form() -> None:
    image, probs, w = _tiny()
    s = probs[0].reshape(3, -1)  # (K, N)
    degree = w.sum(dim=1)  # W 1
    regularizers = gradient_regularizers(
        ("dense_crf",), sigma_rgb=SIGMA_RGB, sigma_xy=SIGMA_XY, backend="exact"
    )
    raw = regularizer_gradients(regularizers, image, probs)["dense_crf"]
    expected = (degree - 2 * s @ w) / degree.sum()  # (W 1 - 2 W S_k) / 1'W1, W symmetric
    torch.testing.assert_close(raw.reshape(3, -1), expected, rtol=1e-9, atol=1e-12)
    tangent = regularizer_gradients(regularizers, image, probs, tangent=True)["dense_crf"]
    expected = -2 * (s @ w - degree / 3) / degree.sum()  # the part a softmax feels
    torch.testing.assert_close(tangent.reshape(3, -1), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(tangent.sum(dim=0), torch.zeros(4, 5, dtype=torch.float64))


def test_normalized_cut_and_kernel_cut_gradients_equal_autograd_of_brute_force() -> None:
    image, probs, w = _tiny()
    segmentation = probs.clone().requires_grad_(True)
    s = segmentation[0].reshape(3, -1)
    degree = w.sum(dim=1)
    crf = (s * (degree - s @ w)).sum() / degree.sum()
    nc = ((s * (degree - s @ w)).sum(dim=1) / (s @ degree)).sum()  # sum_k S_k'W(1-S_k) / d'S_k
    (crf_grad,) = torch.autograd.grad(crf, segmentation, retain_graph=True)
    (nc_grad,) = torch.autograd.grad(nc, segmentation)
    regularizers = gradient_regularizers(
        ("normalized_cut", "kernel_cut"),
        sigma_rgb=SIGMA_RGB,
        sigma_xy=SIGMA_XY,
        gamma=GAMMA,
        backend="exact",
    )
    gradients = regularizer_gradients(regularizers, image, probs)
    torch.testing.assert_close(gradients["normalized_cut"], nc_grad[0], rtol=1e-9, atol=1e-12)
    # kernel cut's gradient is the CRF's plus gamma times the normalized cut's (paper, 3.1)
    expected = crf_grad[0] + GAMMA * nc_grad[0]
    torch.testing.assert_close(gradients["kernel_cut"], expected, rtol=1e-9, atol=1e-12)
    assert probs.grad is None and not probs.requires_grad  # the caller's tensor is untouched


def test_gradient_regularizers_options_and_errors() -> None:
    regularizers = gradient_regularizers(
        ("kernel_cut", "grid_potts", "dense_crf"), sigma_rgb=20.0, sigma_xy=7.0, gamma=0.5
    )
    assert list(regularizers) == ["kernel_cut", "grid_potts", "dense_crf"]
    assert regularizers["kernel_cut"].gamma == 0.5 and regularizers["dense_crf"].sigma_xy == 7.0
    assert regularizers["grid_potts"].sigma_rgb == 20.0
    assert (
        regularizer_title("kernel_cut", regularizers["kernel_cut"]) == "kernel cut\n(CRF + 0.5 NC)"
    )
    assert regularizer_title("dense_crf", regularizers["dense_crf"]) == "dense CRF"
    with pytest.raises(ValueError, match=r"unknown regularizer 'crf'; choose from \['dense_crf'"):
        gradient_regularizers(("crf",))
    with pytest.raises(ValueError, match=r"regularizer 'dense_crf' given twice"):
        gradient_regularizers(("dense_crf", "dense_crf"))
    with pytest.raises(ValueError, match=r"sigma_xy"):
        gradient_regularizers(("dense_crf",), sigma_xy=0.0)


def test_scribble_probs_is_partial_cross_entropy_alone() -> None:
    image = torch.full((1, 6, 8), 100.0)
    image[:, :, 4:] = 200.0
    scribbles = torch.full((6, 8), 255)
    scribbles[1, 1:3] = 0
    scribbles[4, 5:7] = 2
    probs = scribble_probs(image, scribbles, num_classes=3, n_steps=30)
    assert probs.shape == (3, 6, 8)
    labeled = scribbles != 255
    assert (probs.argmax(dim=0)[labeled] == scribbles[labeled]).all()
    assert probs.max(dim=0).values[labeled].min() > 0.9
    # no regularizer: nothing reaches the unlabeled pixels, which stay uniform
    torch.testing.assert_close(probs[:, ~labeled], torch.full((3, int((~labeled).sum())), 1 / 3))


def test_network_probs_is_the_softmax_of_the_normalized_image() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, kernel_size=1).eval()
    image = torch.rand(3, 5, 6) * 255
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    probs = network_probs(model, image, mean, std)
    with torch.no_grad():
        expected = model(normalize(image, mean, std)[None]).softmax(dim=1)[0]
    torch.testing.assert_close(probs, expected)


def test_shown_classes_scribbled_or_predicted() -> None:
    scribbles = np.full((2, 3), 255, dtype=np.uint8)
    scribbles[0, 0] = 4
    probs = np.zeros((5, 2, 3))
    probs[1] = 1.0
    probs[2, 1, 2] = 2.0
    assert shown_classes(scribbles, probs) == [1, 2, 4]


def test_render_gradient_figure_layout_and_colours() -> None:
    height, width = 10, 20
    image = np.full((1, height, width), 90.0, dtype=np.float32)  # gray
    scribbles = np.full((height, width), 255, dtype=np.uint8)
    scribbles[2, 2:6] = 1
    probs = np.full((2, height, width), 0.5)
    push = np.stack([-np.ones((height, width)), np.ones((height, width))])  # class 0 <, 1 >
    figure = render_gradient_figure(
        image, scribbles, probs, {"A": push, "B": -push}, ["bg", "fg"], [0, 1], "t", 64
    )
    assert isinstance(figure, Image.Image) and figure.mode == "RGB"
    assert figure.size == gradient_figure_size(height, width, 2, 2, 64, title_lines=1)
    assert figure.size[0] == 640  # the legend's minimum width; 3 columns of 64 x 32 are less
    pixels = np.asarray(figure).reshape(-1, 3)
    panel_area = 64 * 32
    for colour in (NEGATIVE, POSITIVE):  # one map of each sign per row, plus a legend swatch
        count = int((pixels == np.rint(colour)).all(axis=1).sum())
        assert 2 * panel_area <= count < 2 * panel_area + 200
    taller = render_gradient_figure(
        image, scribbles, probs, {"A": push}, ["bg", "fg"], [1], "t\nt2", 64
    )
    assert taller.size == gradient_figure_size(height, width, 1, 1, 64, title_lines=2)
