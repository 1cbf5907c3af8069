r"""Agreement of :func:`dense_crf_inference` with pydensecrf2 (Krähenbühl's C++ dense CRF).

pydensecrf is an optional reference (``pip install pydensecrf2``, needs Cython and a C++
compiler); every comparison is skipped when it is absent. How its API maps onto ours:

- ``setUnaryEnergy(U)`` starts from ``Q = softmax(-U)``: ``U = -logits`` (any per-pixel shift of
  U is irrelevant), so ``inference(0)`` is our ``n_iter=0``.
- ``addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, compat=w_bilateral)`` and
  ``addPairwiseGaussian(sxy=theta_gamma, compat=w_gaussian)``, ``DIAG_KERNEL``,
  ``NORMALIZE_SYMMETRIC``: a number ``compat=w`` is ``PottsCompatibility(w)``, whose update
  ``softmax(-U + w K~ Q)`` equals ours with Potts ``mu = 1 - I`` and weight ``w`` up to a
  per-pixel constant.
- Gray images: pydensecrf only takes 8-bit RGB. Three identical channels triple the squared
  intensity distance, so a gray image with ``theta_beta`` is pydensecrf's
  ``srgb = sqrt(3) * theta_beta`` on the channel repeated three times (checked exactly below).

Two differences remain, so agreement is measured on labels, not on Q:

- pydensecrf's messages include the self term (``K~ Q``, diagonal kept); ours exclude it, as in
  the paper's :math:`\sum_{q \neq p}`. The extra ``w Q_p / d_p`` is small wherever a pixel has
  neighbours of similar colour (``1 / d_p`` ~ 0.006 bilateral, ~0.02 smoothness, median).
- Both filter with a permutohedral lattice, but different ones (C++: one blur pass per
  direction; ours: symmetric ``B^T B`` blur with calibration). Symmetric normalization cancels a
  global scale, not the different kernel shapes.

``NO_NORMALIZATION`` is not compared: there pydensecrf uses its raw lattice output, which is
0.6-0.9 of the exact Gaussian sum depending on the kernel and image, while ours is unbiased, so
equal weights do not mean equal CRFs.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from weakseg.crf import dense_crf_inference

DEEPLAB = {
    "n_iter": 5,
    "w_bilateral": 4.0,
    "theta_alpha": 49.0,
    "theta_beta": 5.0,
    "w_gaussian": 3.0,
    "theta_gamma": 3.0,
}
# DeepLab's post-processing CRF (weakseg's defaults) and one more setting per data set: on photos
# the pydensecrf README's example, which couples much more strongly (bilateral weight 10 over
# 80 px); on cardiac MRI a short-range one, since the README's erases the small heart structures
# (every pixel ends up background, in both implementations: agreement without meaning).
PHOTO_SETTINGS = {
    "deeplab": DEEPLAB,
    "pydensecrf-readme": {
        "n_iter": 10,
        "w_bilateral": 10.0,
        "theta_alpha": 80.0,
        "theta_beta": 13.0,
        "w_gaussian": 3.0,
        "theta_gamma": 3.0,
    },
}
ACDC_SETTINGS = {
    "deeplab": DEEPLAB,
    "short-range": {
        "n_iter": 10,
        "w_bilateral": 3.0,
        "theta_alpha": 20.0,
        "theta_beta": 8.0,
        "w_gaussian": 3.0,
        "theta_gamma": 2.0,
    },
}
# Validation slices of four patients (end-diastole and end-systole) with all four classes.
ACDC_IDS = (
    "patient071_frame01_slice_2",
    "patient075_frame01_slice_0",
    "patient077_frame01_slice_1",
    "patient078_frame09_slice_1",
)
MIN_AGREEMENT = 0.97


@pytest.fixture(scope="module")
def densecrf() -> ModuleType:
    """pydensecrf's ``densecrf`` module, or a skip."""
    return pytest.importorskip("pydensecrf.densecrf")


def colour_labels(rgb: np.ndarray, num_classes: int, seed: int = 0) -> Tensor:
    """A label map ``[H, W]`` from a simple colour model: k-means on the pixel colours."""
    colours = torch.from_numpy(rgb).reshape(-1, 3).double()
    generator = torch.Generator().manual_seed(seed)
    centres = colours[torch.randperm(colours.shape[0], generator=generator)[:num_classes]]
    for _ in range(10):
        labels = torch.cdist(colours, centres).argmin(dim=1)
        for k in range(num_classes):
            if bool((labels == k).any()):
                centres[k] = colours[labels == k].mean(dim=0)
    return torch.cdist(colours, centres).argmin(dim=1).reshape(rgb.shape[:2])


def noisy_logits(labels: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """Unaries of a weak classifier: the label map blurred (9x9 box), in log space, plus
    unit Gaussian noise per pixel and class. Tensor[1, K, H, W], float32."""
    onehot = F.one_hot(labels.long(), num_classes).movedim(-1, 0)[None].float()  # (1, K, H, W)
    blurred = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    generator = torch.Generator().manual_seed(seed)
    return torch.log(blurred + 0.1) + torch.randn(blurred.shape, generator=generator)


def pydensecrf_q(
    densecrf: ModuleType, logits: Tensor, rgb: np.ndarray, srgb: float, setting: dict
) -> np.ndarray:
    """pydensecrf's marginals ``[K, H, W]`` for ``logits [1, K, H, W]`` and 8-bit ``rgb``."""
    num_classes, height, width = logits.shape[1:]
    crf = densecrf.DenseCRF2D(width, height, num_classes)
    unary = (-logits[0]).reshape(num_classes, -1).numpy().astype(np.float32)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(
        sxy=setting["theta_gamma"],
        compat=setting["w_gaussian"],
        kernel=densecrf.DIAG_KERNEL,
        normalization=densecrf.NORMALIZE_SYMMETRIC,
    )
    crf.addPairwiseBilateral(
        sxy=setting["theta_alpha"],
        srgb=srgb,
        rgbim=np.ascontiguousarray(rgb),
        compat=setting["w_bilateral"],
        kernel=densecrf.DIAG_KERNEL,
        normalization=densecrf.NORMALIZE_SYMMETRIC,
    )
    return np.asarray(crf.inference(setting["n_iter"])).reshape(num_classes, height, width)


def crf_labels(
    densecrf: ModuleType, logits: Tensor, image: np.ndarray, setting: dict
) -> tuple[Tensor, Tensor]:
    """Labels ``[H, W]`` of (ours, pydensecrf) for ``logits [1, K, H, W]`` and ``image``.

    ``image`` is ``[H, W, 3]`` RGB or ``[H, W]`` gray, uint8; ours sees gray as one channel.
    """
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        srgb = math.sqrt(3.0) * setting["theta_beta"]
        images = torch.from_numpy(image.copy())[None, None].float()  # (1, 1, H, W)
    else:
        rgb, srgb = image, setting["theta_beta"]
        images = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    reference = torch.from_numpy(pydensecrf_q(densecrf, logits, rgb, srgb, setting)).argmax(0)
    ours = dense_crf_inference(logits, images, **setting)[0].argmax(0)
    return ours, reference


def mean_iou(labels: Tensor, truth: Tensor, num_classes: int) -> float:
    """Mean over the classes of ``truth`` of the intersection over union with ``labels``."""
    ious = [
        float(((labels == k) & (truth == k)).sum() / ((labels == k) | (truth == k)).sum())
        for k in range(num_classes)
        if bool((truth == k).any())
    ]
    return sum(ious) / len(ious)


def check_agreement(
    densecrf: ModuleType, image: np.ndarray, truth: Tensor, num_classes: int, setting: dict
) -> float:
    """Run both CRFs on unaries made from ``truth``; assert the CRF does real work and both
    agree on at least ``MIN_AGREEMENT`` of the labels. Returns the agreement."""
    logits = noisy_logits(truth, num_classes)
    ours, reference = crf_labels(densecrf, logits, image, setting)
    noisy_iou = mean_iou(logits[0].argmax(0), truth, num_classes)
    reference_iou = mean_iou(reference, truth, num_classes)
    # The CRF must do real work, or agreement would say nothing: its labels must be closer (mean
    # IoU) to those the unaries were made from than the noisy argmax is. A CRF that erases the
    # small classes (all background, as the README's setting does on ACDC) is not.
    assert reference_iou > noisy_iou, (noisy_iou, reference_iou)
    agreement = float((ours == reference).double().mean())
    assert agreement >= MIN_AGREEMENT, agreement
    return agreement


def test_initial_marginals_match(densecrf: ModuleType) -> None:
    # U = -logits: pydensecrf's inference(0) is softmax(-U), our n_iter=0 is softmax(logits).
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    logits = torch.randn(1, 4, 9, 11, generator=torch.Generator().manual_seed(0)) * 3
    setting = {**DEEPLAB, "n_iter": 0}
    reference = pydensecrf_q(densecrf, logits, rgb, setting["theta_beta"], setting)
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    ours = dense_crf_inference(logits, images, **setting)[0]
    torch.testing.assert_close(ours, torch.from_numpy(reference), atol=1e-6, rtol=0)


def test_gray_equals_three_identical_channels_with_sqrt3_theta_beta() -> None:
    # The mapping used for gray images, exact: |g_p - g_q|^2 / tb^2 = 3 |g_p - g_q|^2 / (3 tb^2).
    skimage_data = pytest.importorskip("skimage.data")
    gray = torch.from_numpy(skimage_data.camera()[200:218, 230:250].copy()).double()
    logits = torch.randn(1, 3, 18, 20, generator=torch.Generator().manual_seed(1), dtype=gray.dtype)
    kw = {**DEEPLAB, "theta_alpha": 6.0, "backend": "exact"}
    one = dense_crf_inference(logits, gray[None, None], **kw)
    kw["theta_beta"] *= math.sqrt(3.0)
    three = dense_crf_inference(logits, gray[None, None].expand(1, 3, -1, -1), **kw)
    torch.testing.assert_close(one, three)


@pytest.mark.parametrize("setting", list(PHOTO_SETTINGS))
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_agreement_on_photos(densecrf: ModuleType, name: str, setting: str) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    rgb = getattr(skimage_data, name)()
    truth = colour_labels(rgb, num_classes=5)
    check_agreement(densecrf, rgb, truth, 5, PHOTO_SETTINGS[setting])


@pytest.mark.parametrize("setting", list(ACDC_SETTINGS))
@pytest.mark.parametrize("slice_id", ACDC_IDS)
def test_agreement_on_acdc_slices(
    densecrf: ModuleType, acdc_root: Path, slice_id: str, setting: str
) -> None:
    assert slice_id in (acdc_root / "splits" / "val.txt").read_text().split()
    gray = np.array(Image.open(acdc_root / "images" / f"{slice_id}.png").convert("L"))
    truth = torch.from_numpy(np.array(Image.open(acdc_root / "masks" / f"{slice_id}.png")))
    check_agreement(densecrf, gray, truth, 4, ACDC_SETTINGS[setting])
