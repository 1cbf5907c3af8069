r"""GrabCut proposals from scribbles: the "GrabCut (one time)" baseline of Table 2.

Each image's scribbles are turned once, before training, into a full "fake" ground-truth mask
by OpenCV's GrabCut (Rother et al. 2004), run one-vs-rest for every class present in the
scribbles; the network is then trained on these masks with plain cross-entropy.

OpenCV is an optional dependency (``pip install opencv-python-headless``); it is imported only
when a proposal is computed.

Per class :math:`c` the GrabCut mask is: pixels scribbled :math:`c` definite foreground
(``GC_FGD``), pixels scribbled with another class definite background (``GC_BGD``), unlabeled
pixels *probable* foreground (``GC_PR_FGD``) when their nearest scribbled pixel (Euclidean
distance) belongs to :math:`c` and probable background (``GC_PR_BGD``) otherwise. The nearest-
scribble initialization gives each colour model a sensible first guess of its region. With
``init`` (e.g. a network's prediction, for ScribbleSup-style iterative proposals) that first
guess is ``init == c`` instead.

Combining the K binary results (conflict and tie rule): a pixel that exactly one class claims
as foreground takes that class. A pixel claimed by several classes, or by none, takes among
those claimants (among all scribbled classes if none claims it) the class with the highest
colour posterior :math:`p_c(\text{fg} \mid I_p) = \pi^{fg}_c(I_p) / (\pi^{fg}_c(I_p) +
\pi^{bg}_c(I_p))`, where :math:`\pi^{fg}_c, \pi^{bg}_c` are the final foreground/background
colour GMM likelihoods of class :math:`c`'s GrabCut. Scribbled pixels always keep their label.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from weakseg.data.dataset import SegmentationDataset, dataset_label
from weakseg.data.io import IGNORE_INDEX, write_label
from weakseg.data.synthetic import SyntheticDataset

__all__ = ["grabcut_proposal", "write_grabcut_proposals"]

INSTALL_HINT = "pip install opencv-python-headless"
# OpenCV's GrabCut GMM: 5 components, each stored as weight, mean (3) and covariance (3x3).
_COMPONENTS = 5


def _import_cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            f"GrabCut proposals need OpenCV, which is not installed: {INSTALL_HINT} "
            "(or pip install 'weakseg[proposals]')"
        ) from exc
    return cv2


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a numpy array or a torch.Tensor, got {type(value).__name__}")


def _image_to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` (C = 1 or 3) or ``[H, W]`` in 0-255 -> contiguous ``uint8 [H, W, 3]``."""
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image must have shape [C, H, W] with C = 1 (gray) or 3 (RGB), or [H, W], "
            f"got {tuple(image.shape)}"
        )
    if image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"image must hold numbers in 0-255, got dtype {image.dtype}")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {tuple(image.shape)})")
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("image contains non-finite values (NaN or inf)")
    low, high = float(values.min()), float(values.max())
    if low < -0.5 or high > 255.5:
        raise ValueError(
            f"image must hold intensities in the 0-255 range, got values in [{low:.4g}, "
            f"{high:.4g}]; pass the raw image, not the network-normalized one"
        )
    if image.shape[0] == 1:
        values = np.repeat(values, 3, axis=0)
    # GrabCut only needs a consistent channel order; keep RGB order, 8-bit as OpenCV requires.
    return np.ascontiguousarray(
        np.clip(np.rint(values), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    )


def _gmm_log_likelihood(model: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``log sum_i w_i N(x; mu_i, Sigma_i)`` for ``pixels [N, 3]`` under an OpenCV GMM model.

    OpenCV stores the model as ``1 x 65`` doubles: 5 weights, 5 means (3 each), 5 covariances
    (3x3 each, already regularized by GrabCut when singular).
    """
    flat = model.reshape(-1).astype(np.float64)
    weights = flat[:_COMPONENTS]
    means = flat[_COMPONENTS : 4 * _COMPONENTS].reshape(_COMPONENTS, 3)
    covs = flat[4 * _COMPONENTS :].reshape(_COMPONENTS, 3, 3)
    logs = np.full((pixels.shape[0], _COMPONENTS), -np.inf)
    for i in range(_COMPONENTS):
        if weights[i] <= 0:
            continue
        sign, logdet = np.linalg.slogdet(covs[i])
        if sign <= 0:
            continue
        diff = pixels - means[i]  # (N, 3)
        mahalanobis = np.einsum("nj,nj->n", diff @ np.linalg.inv(covs[i]), diff)
        logs[:, i] = np.log(weights[i]) - 0.5 * (mahalanobis + logdet + 3 * np.log(2 * np.pi))
    top = logs.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (top + np.log(np.exp(logs - top).sum(axis=1, keepdims=True)))[:, 0]


def _nearest_scribble(cv2: ModuleType, scribbles: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class of the nearest scribbled pixel, for every pixel ``[H, W]``."""
    distances = np.stack(
        [cv2.distanceTransform((scribbles != c).astype(np.uint8), cv2.DIST_L2, 5) for c in classes]
    )  # (len(classes), H, W)
    return classes[distances.argmin(axis=0)]


def grabcut_proposal(
    image: np.ndarray | torch.Tensor,
    scribbles: np.ndarray | torch.Tensor,
    *,
    num_classes: int | None = None,
    n_iter: int = 5,
    ignore_index: int = IGNORE_INDEX,
    init: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """A full label map from scribbles by one-vs-rest GrabCut (see the module docstring).

    Special cases: no scribbled pixel gives a map filled with ``ignore_index`` (no proposal);
    a single scribbled class gives that class everywhere (GrabCut needs both foreground and
    background samples). If OpenCV fails for a class (e.g. too few pixels to fit its colour
    models) that class falls back to its nearest-scribble region, with a warning.

    Args:
        image: ``[C, H, W]`` (C = 1 gray or 3 RGB) or ``[H, W]``, intensities in 0-255, numpy or
            tensor (e.g. ``sample["image_raw"]`` or :func:`weakseg.data.io.read_image`).
        scribbles: ``[H, W]`` integer class ids, ``ignore_index`` = unlabeled.
        num_classes: if given, scribble ids must be below it.
        n_iter: GrabCut iterations (>= 1) per class.
        ignore_index: the "unlabeled" id.
        init: optional ``[H, W]`` class ids, the first guess of each class's region (probable
            foreground where ``init == c``) instead of the nearest scribble; scribbles still
            decide which classes compete and stay hard constraints.

    Returns:
        ``uint8 np.ndarray [H, W]`` of class ids.

    Raises:
        ImportError: OpenCV is missing (the message says ``pip install
            opencv-python-headless``).
        ValueError: bad shapes, sizes that differ, intensities outside 0-255, scribble ids
            outside ``0..num_classes-1`` (or above 254), a bad ``n_iter``.
        TypeError: inputs that are not arrays/tensors, or non-integer scribbles.

    Example:
        >>> image = np.zeros((3, 20, 20)); image[:, :, 10:] = 255
        >>> scribbles = np.full((20, 20), 255); scribbles[5:15, 3], scribbles[5:15, 16] = 0, 1
        >>> mask = grabcut_proposal(image, scribbles)  # doctest: +SKIP
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
    image = _as_numpy("image", image)
    scribbles = _as_numpy("scribbles", scribbles)
    if scribbles.ndim != 2:
        raise ValueError(f"scribbles must have shape [H, W], got {tuple(scribbles.shape)}")
    if not np.issubdtype(scribbles.dtype, np.integer):
        raise TypeError(f"scribbles must hold integer class ids, got dtype {scribbles.dtype}")
    bgr = _image_to_bgr_uint8(image)
    if bgr.shape[:2] != scribbles.shape:
        raise ValueError(
            f"size mismatch: image is {bgr.shape[1]}x{bgr.shape[0]} (WxH) but scribbles are "
            f"{scribbles.shape[1]}x{scribbles.shape[0]}"
        )
    labeled = scribbles != ignore_index
    classes = np.unique(scribbles[labeled]).astype(np.int64)
    limit = 255 if num_classes is None else int(num_classes)
    if classes.size and (classes.min() < 0 or classes.max() >= limit):
        raise ValueError(
            f"scribbles hold class ids {classes.tolist()} outside 0..{limit - 1} "
            f"(num_classes={num_classes}, ignore_index={ignore_index})"
        )
    height, width = scribbles.shape
    if classes.size == 0:
        return np.full((height, width), ignore_index, dtype=np.uint8)
    if classes.size == 1:
        return np.full((height, width), classes[0], dtype=np.uint8)

    cv2 = _import_cv2()
    if init is None:
        nearest = _nearest_scribble(cv2, scribbles, classes)  # (H, W)
    else:
        nearest = _as_numpy("init", init)
        if nearest.shape != scribbles.shape:
            raise ValueError(
                f"init must have the scribbles' shape {tuple(scribbles.shape)}, got "
                f"{tuple(nearest.shape)}"
            )
    pixels = bgr.reshape(-1, 3).astype(np.float64)
    foreground = np.zeros((classes.size, height, width), dtype=bool)
    posterior = np.zeros((classes.size, height, width))
    for i, c in enumerate(classes):
        mask = np.where(nearest == c, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        mask[labeled & (scribbles == c)] = cv2.GC_FGD
        mask[labeled & (scribbles != c)] = cv2.GC_BGD
        bgd_model = np.zeros((1, 13 * _COMPONENTS), np.float64)
        fgd_model = np.zeros((1, 13 * _COMPONENTS), np.float64)
        try:
            cv2.grabCut(bgr, mask, None, bgd_model, fgd_model, n_iter, cv2.GC_INIT_WITH_MASK)
        except cv2.error as exc:
            warnings.warn(
                f"GrabCut failed for class {int(c)} ({str(exc).strip().splitlines()[-1]}); "
                "using its nearest-scribble region instead",
                RuntimeWarning,
                stacklevel=2,
            )
            foreground[i] = nearest == c
            posterior[i] = foreground[i]
            continue
        foreground[i] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        log_ratio = _gmm_log_likelihood(fgd_model, pixels) - _gmm_log_likelihood(bgd_model, pixels)
        with np.errstate(over="ignore", invalid="ignore"):
            prob = 1.0 / (1.0 + np.exp(-log_ratio))
        posterior[i] = np.nan_to_num(prob, nan=0.5).reshape(height, width)

    claims = foreground.sum(axis=0)  # (H, W)
    # Claimants compete by posterior; unclaimed pixels let every class compete.
    candidates = np.where(claims[None] > 0, foreground, True)
    score = np.where(candidates, posterior, -np.inf)
    result = classes[score.argmax(axis=0)]
    result[labeled] = scribbles[labeled]
    return result.astype(np.uint8)


def write_grabcut_proposals(
    dataset: SegmentationDataset,
    output_dir: str | Path,
    *,
    n_iter: int = 5,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write a GrabCut proposal PNG ``<output_dir>/<id>.png`` for every sample of a split.

    The "GrabCut (one time)" baseline of Table 2: run once (``weakseg proposals grabcut``), then
    train with full supervision on the proposals (``supervision: full`` and ``label_dir:
    <output_dir>`` in the training config, see :class:`~weakseg.data.LabelFolderDataset`).
    Proposals are written as 8-bit palette PNGs of class ids (the folder-dataset label format;
    255 where an image has no scribble). The dataset's own scribbles are used, after its
    ``supervision`` (``"clicks"``) and ``shorten_ratio`` are applied; its ``transform`` is not
    (proposals are at full size).

    Args:
        dataset: a :class:`~weakseg.data.FolderDataset`, :class:`~weakseg.data.VOCDataset` (any
            :class:`~weakseg.data.SegmentationDataset`) or
            :class:`~weakseg.data.SyntheticDataset` with ``supervision="scribbles"`` or
            ``"clicks"``.
        output_dir: folder to write to (created if needed).
        n_iter: GrabCut iterations per class.
        overwrite: replace existing PNGs; otherwise existing files are kept (resumable).
        progress: show a tqdm progress bar.

    Returns:
        The paths of the proposal PNGs, in dataset order.

    Raises:
        ImportError: OpenCV is missing.
        ValueError: a dataset whose supervision has no scribbles.
        weakseg.data.DataError: a bad sample file.
    """
    if not isinstance(dataset, (SegmentationDataset, SyntheticDataset)):
        raise TypeError(
            f"dataset must be a weakseg SegmentationDataset (e.g. FolderDataset) or a "
            f"SyntheticDataset, got {type(dataset).__name__}"
        )
    if dataset.supervision not in ("scribbles", "clicks"):
        raise ValueError(
            f"GrabCut proposals need scribbles: dataset has supervision="
            f"{dataset.supervision!r}; load it with supervision='scribbles' or 'clicks'"
        )
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
    _import_cv2()  # fail before the loop, not after the first image
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in tqdm(range(len(dataset)), desc="GrabCut proposals", disable=not progress):
        synthetic = isinstance(dataset, SyntheticDataset)
        sample_id = dataset.sample_id(index) if synthetic else dataset.files[index].id
        path = output_dir / f"{sample_id}.png"
        paths.append(path)
        if path.exists() and not overwrite:
            continue
        if synthetic:
            image, mask, scribbles = dataset.generate(index)
            image = image.transpose(2, 0, 1)  # (3, H, W)
        else:
            image, scribbles, mask = dataset.load(index)
        label, _ = dataset_label(dataset, image.shape[-2:], scribbles, mask)
        proposal = grabcut_proposal(
            image, np.asarray(label), num_classes=dataset.num_classes, n_iter=n_iter
        )
        write_label(path, proposal)
    return paths
