r"""SEC losses for image-tag supervision (Kolesnikov & Lampert, ECCV 2016), Table 3 of the paper.

"Seed, expand and constrain" trains a segmentation network from image-level tags with three
losses of the softmax output :math:`S` ``[B, K, *spatial]``:

- :func:`seeding_loss`: cross-entropy on sparse *localization cues* (seeds),
- :func:`expansion_loss`: image-level classification through global weighted rank pooling,
- :func:`constrain_to_boundary_loss`: KL divergence between :math:`S` and its dense CRF
  mean-field refinement.

:func:`sec_loss` adds them up; with ``boundary="dense_crf_loss"`` the third term is replaced by
the dense CRF loss of eq. (4) (:func:`~weakseg.losses.dense_crf_loss`), the variant of Table 3
that needs no iterative inference; ``boundary="none"`` leaves it out (seeding + expansion, the
first column of Table 3). ``scale_factor`` runs all three at a reduced resolution, like SEC's
41x41 score map of a 321x321 crop (``scale_factor=0.125``).

Localization cues. SEC's seeds come from class activation maps (CAM, Zhou et al. 2016) of a
classification network trained on the same tags, thresholded, plus a background cue from a
saliency map. **Computing them is out of scope here**: cues are an input, given either as a
tensor ``[B, K, *spatial]`` (bool or 0/1, several classes per pixel allowed) or as a folder of
PNGs read by :func:`load_cues` (one class id per pixel, ``255`` = no cue).

``weakseg train`` trains with :class:`SECLoss` through ``losses: {sec: {...}}`` (its keyword
arguments), the cues being the training labels (``cue_dir``, or the scribbles as a stand-in)
and the tags each sample's ``tags``; see :mod:`weakseg.engine.config`.

Example:
    >>> probs = torch.randn(2, 3, 16, 16).softmax(dim=1)
    >>> images = torch.rand(2, 3, 64, 64) * 255
    >>> cues = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    >>> cues[:, 0, :2], cues[:, 1, 8, 8] = True, True
    >>> tags = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    >>> out = sec_loss(probs, images, cues, tags, backend="exact")
    >>> sorted(out._fields)
    ['boundary', 'expansion', 'loss', 'seeding']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from weakseg._validation import (
    check_positive,
    check_same_device,
    check_tensor,
)
from weakseg.crf._kernels import NORMALIZATIONS as CRF_NORMALIZATIONS
from weakseg.crf._kernels import check_kernel_parameters, check_n_iter
from weakseg.crf.mean_field import dense_crf_inference
from weakseg.losses._affinity import (
    NORMALIZATIONS,
    check_choice,
    check_images,
    check_nonnegative,
    check_probs,
    check_valid_mask,
)
from weakseg.losses.dense_crf import dense_crf_loss

__all__ = [
    "ConstrainToBoundaryLoss",
    "ExpansionLoss",
    "SECLoss",
    "SECLossOutput",
    "SeedingLoss",
    "constrain_to_boundary_loss",
    "cues_from_labels",
    "expansion_loss",
    "global_weighted_rank_pooling",
    "load_cues",
    "sec_loss",
    "seeding_loss",
]

Boundary = Literal["crf_inference", "dense_crf_loss", "none"]
BOUNDARIES: tuple[str, ...] = ("crf_inference", "dense_crf_loss", "none")
NO_CUE = 255

# SEC's constrain-to-boundary CRF: the Krähenbühl & Koltun defaults of its CRF wrapper (bilateral
# weight 10, xy std 80, colour std 13; Gaussian weight 3, xy std 3; 10 iterations) with the
# spatial stds divided by 12 because the CRF runs on the 41x41 score map of a 321x321 input.
SEC_CRF_SCALE = 12.0
SEC_N_ITER = 10
SEC_W_BILATERAL = 10.0
SEC_THETA_ALPHA = 80.0 / SEC_CRF_SCALE
SEC_THETA_BETA = 13.0
SEC_W_GAUSSIAN = 3.0
SEC_THETA_GAMMA = 3.0 / SEC_CRF_SCALE


def _compute_dtype(probs: Tensor) -> torch.dtype:
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def _safe_log(x: Tensor) -> Tensor:
    # log(0) would give -inf and a NaN gradient; tiny keeps both finite (-87 in float32).
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def _check_decay(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (a decay rate), got {value!r}")
    return number


def _check_binary(name: str, value: Tensor, layout: str) -> Tensor:
    """A bool view of a bool or 0/1 tensor; ValueError for any other value."""
    if value.dtype == torch.bool:
        return value
    if value.is_complex():
        raise TypeError(f"{name} must be a bool or 0/1 tensor {layout}, got dtype {value.dtype}")
    bad = (value != 0) & (value != 1)
    if bool(bad.any()):
        shown = sorted({float(v) for v in value[bad].flatten()[:5].tolist()})
        raise ValueError(
            f"{name} must hold only 0/1 (or bool) values {layout}, got {int(bad.sum())} "
            f"entries such as {shown}"
        )
    return value != 0


def _check_scale_factor(value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"scale_factor must be a number in (0, 1], got {value!r}") from None
    if not 0 < number <= 1:
        raise ValueError(f"scale_factor must be in (0, 1] (a downscaling), got {value!r}")
    return number


def _rescale(
    probs: Tensor, cues: Tensor, valid_mask: Tensor | None, scale_factor: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``probs`` (bilinear), ``cues`` (max pooling) and ``valid_mask`` (nearest) at
    ``scale_factor`` of their spatial size.

    Max pooling makes a cell a cue of every class cued inside it, so that thin cues (scribbles)
    survive the shrinking; a bilinear mean of probabilities is still a distribution.
    """
    size = [int(s * scale_factor) for s in probs.shape[2:]]
    if min(size) < 1:
        raise ValueError(
            f"scale_factor={scale_factor} shrinks the spatial size {tuple(probs.shape[2:])} "
            f"to {tuple(size)}: use a larger scale_factor"
        )
    linear, pool = (
        ("bilinear", F.adaptive_max_pool2d)
        if probs.ndim == 4
        else ("trilinear", F.adaptive_max_pool3d)
    )
    probs = F.interpolate(probs, size=size, mode=linear, align_corners=False)  # (B, K, *size)
    cues = pool(cues.to(probs.dtype), size) > 0  # (B, K, *size)
    if valid_mask is not None:
        mask = valid_mask.unsqueeze(1).to(probs.dtype)
        valid_mask = F.interpolate(mask, size=size, mode="nearest")[:, 0] > 0.5  # (B, *size)
    return probs, cues, valid_mask


def _check_cues(cues: Tensor, probs: Tensor) -> Tensor:
    check_tensor("cues", cues)
    if tuple(cues.shape) != tuple(probs.shape):
        raise ValueError(
            f"cues must have the shape of probs [B, K, *spatial] = {tuple(probs.shape)}, got "
            f"{tuple(cues.shape)}; for a label map [B, *spatial] use cues_from_labels()"
        )
    check_same_device("cues", cues, "probs", probs)
    return _check_binary("cues", cues, "[B, K, *spatial]")


def _check_tags(tags: Tensor, probs: Tensor) -> Tensor:
    check_tensor("tags", tags)
    expected = tuple(probs.shape[:2])
    if tuple(tags.shape) != expected:
        raise ValueError(
            f"tags must have shape [B, K] = {expected} to match probs of shape "
            f"{tuple(probs.shape)}, got {tuple(tags.shape)}"
        )
    check_same_device("tags", tags, "probs", probs)
    return _check_binary("tags", tags, "[B, K]")


def _check_background_index(background_index: int | None, num_classes: int) -> None:
    if background_index is None:
        return
    if isinstance(background_index, bool) or not isinstance(background_index, int):
        raise TypeError(f"background_index must be an int or None, got {background_index!r}")
    if not 0 <= background_index < num_classes:
        raise ValueError(
            f"background_index must be in 0..{num_classes - 1} (K={num_classes}) or None, "
            f"got {background_index}"
        )


def _resize_images(images: Tensor, probs: Tensor) -> Tensor:
    """Images at the spatial size of ``probs`` (bilinear, as SEC does for its CRF layer)."""
    check_images(images)
    if images.shape[0] != probs.shape[0]:
        raise ValueError(
            f"batch size mismatch: probs has {probs.shape[0]} (shape {tuple(probs.shape)}), "
            f"images has {images.shape[0]} (shape {tuple(images.shape)})"
        )
    if images.ndim != probs.ndim:
        raise ValueError(
            f"images must have as many spatial dims as probs: images has shape "
            f"{tuple(images.shape)}, probs {tuple(probs.shape)}"
        )
    check_same_device("images", images, "probs", probs)
    images = images.detach().to(_compute_dtype(probs))
    if images.shape[2:] == probs.shape[2:]:
        return images
    mode = "bilinear" if probs.ndim == 4 else "trilinear"
    return F.interpolate(images, size=probs.shape[2:], mode=mode, align_corners=False)


def cues_from_labels(labels: Tensor, num_classes: int, ignore_index: int = NO_CUE) -> Tensor:
    """Localization cues ``bool [B, K, *spatial]`` from a cue label map ``[B, *spatial]``.

    ``labels`` holds one class id per pixel (``0..K-1``) and ``ignore_index`` where there is no
    cue, i.e. the format of the PNGs read by :func:`load_cues`.

    Raises:
        TypeError: ``labels`` is not an integer tensor.
        ValueError: ``num_classes < 1`` or a value outside ``0..K-1`` other than ``ignore_index``.

    Example:
        >>> cues_from_labels(torch.tensor([[[0, 255], [1, 1]]]), 2)[0, 1]
        tensor([[False, False],
                [ True,  True]])
    """
    check_tensor("labels", labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class ids, got {labels.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    labels = labels.long()
    cue = labels != ignore_index
    bad = cue & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = sorted({int(v) for v in labels[bad].unique()[:10].tolist()})
        raise ValueError(
            f"labels holds class ids {values} outside 0..{num_classes - 1} "
            f"(num_classes={num_classes}, ignore_index={ignore_index})"
        )
    ids = torch.where(cue, labels, torch.zeros_like(labels))
    onehot = F.one_hot(ids, num_classes).movedim(-1, 1).bool()  # (B, K, *spatial)
    return onehot & cue.unsqueeze(1)


def _read_cue_png(path: Path, num_classes: int) -> np.ndarray:
    """One cue map ``uint8 [H, W]``; the errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"missing cue file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            label = np.array(image, dtype=np.uint8) if mode in ("L", "P", "1") else None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"unreadable or truncated cue file {path}: {exc}") from None
    if label is None:
        raise ValueError(
            f"cue file {path} has mode {mode!r}; cue maps must be single-channel 8-bit "
            "(gray or palette) PNGs of class ids, 255 = no cue"
        )
    bad = (label >= num_classes) & (label != NO_CUE)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))[:10]
        raise ValueError(
            f"cue file {path} holds class ids {values} >= num_classes={num_classes} "
            f"(valid: 0..{num_classes - 1} and 255 = no cue) in {int(bad.sum())} pixels"
        )
    return label


def load_cues(
    folder: str | Path,
    ids: Sequence[str],
    num_classes: int,
    *,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Read localization cues ``bool Tensor[B, K, H, W]`` from ``<folder>/<id>.png``.

    Format: one single-channel PNG per image (8-bit gray or palette, read by index, like the
    label maps of the folder datasets), holding at each pixel the class id ``0..K-1`` of its
    cue (background included, usually id 0) and ``255`` where there is no cue. One cue per pixel:
    for overlapping cues build the tensor yourself. Cues are usually stored at the resolution of
    the network output (41x41 for DeepLab-LargeFOV on 321x321 crops).

    Args:
        folder: the folder of cue PNGs.
        ids: the image ids, in batch order.
        num_classes: K, including background.
        size: optional ``(H, W)`` to resize every cue map to (nearest neighbour; thin cues may
            lose pixels when shrunk). Without it all maps must have the same size.

    Raises:
        FileNotFoundError: a missing file (the message names it).
        ValueError: an unreadable or non-single-channel file, a class id ``>= K`` other than
            255, maps of different sizes without ``size``; empty ``ids``, bad ``num_classes``
            or ``size``.
    """
    folder = Path(folder)
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty: give at least one image id")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if size is not None and (len(size) != 2 or min(int(s) for s in size) < 1):
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {size!r}")
    maps = []
    for sample_id in ids:
        path = folder / f"{sample_id}.png"
        label = _read_cue_png(path, num_classes)
        if size is not None and tuple(label.shape) != tuple(size):
            resized = Image.fromarray(label).resize((int(size[1]), int(size[0])), Image.NEAREST)
            label = np.asarray(resized, dtype=np.uint8)
        if maps and label.shape != maps[0].shape:
            raise ValueError(
                f"cue file {path} is {label.shape[1]}x{label.shape[0]} (WxH) but "
                f"{folder / (ids[0] + '.png')} is {maps[0].shape[1]}x{maps[0].shape[0]}; "
                "pass size=(H, W) to resize them"
            )
        maps.append(label)
    labels = torch.from_numpy(np.stack(maps).astype(np.int64))  # (B, H, W)
    return cues_from_labels(labels, num_classes, NO_CUE)


def seeding_loss(probs: Tensor, cues: Tensor) -> Tensor:
    r"""Seeding loss: cross-entropy of ``probs`` on the localization cues.

    .. math::
        L_{seed}(S, C) = -\frac{1}{B} \sum_b \frac{1}{\sum_{k,p} C_{bkp}}
                         \sum_{k} \sum_{p} C_{bkp} \log S_{bkp}

    the mean of :math:`-\log S` over the (pixel, class) pairs of each image's cues, averaged
    over the batch. An image without any cue contributes 0 (it still counts in the average).

    Args:
        probs: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], softmax probabilities.
        cues: Tensor[B, K, *spatial] bool or 0/1, True where pixel ``p`` is a seed of class
            ``k`` (see :func:`cues_from_labels` / :func:`load_cues`).

    Returns:
        Tensor[] (scalar), float32 (float64 for float64 ``probs``).

    Raises:
        ValueError: ``probs`` not probabilities, ``cues`` of another shape or device or with
            values other than 0/1.
        TypeError: non-tensor inputs, integer ``probs``.

    Example:
        >>> probs = torch.full((1, 2, 4, 4), 0.5)
        >>> cues = torch.zeros(1, 2, 4, 4, dtype=torch.bool); cues[0, 1, 0, 0] = True
        >>> seeding_loss(probs, cues)  # -log(0.5)
        tensor(0.6931)
    """
    check_probs(probs, None)
    cues = _check_cues(cues, probs)
    probs = probs.to(_compute_dtype(probs))
    # where, not a product: -log(0) at a non-cue pixel must not turn into 0 * inf = NaN.
    terms = torch.where(cues, -_safe_log(probs), 0)  # (B, K, *spatial)
    total = terms.flatten(1).sum(dim=1)  # (B,)
    count = cues.flatten(1).sum(dim=1).clamp_min(1).to(total.dtype)  # (B,)
    return (total / count).mean()


def _decays(
    tags: Tensor,
    background_index: int | None,
    q_fg: float,
    q_bg: float,
    q_absent: float,
    dtype: torch.dtype,
) -> Tensor:
    """Per-class decay ``[B, K]``: q_bg for background, q_fg for present, q_absent for absent."""
    # Built in the compute dtype: a float32 detour would turn 0.996 into 0.99599999...
    decay = torch.full(tags.shape, q_absent, dtype=dtype, device=tags.device)
    decay = torch.where(tags, torch.full_like(decay, q_fg), decay)
    if background_index is not None:
        decay[:, background_index] = q_bg
    return decay


def global_weighted_rank_pooling(probs: Tensor, decay: Tensor) -> Tensor:
    r"""Global weighted rank pooling ``[B, K]`` of ``probs [B, K, *spatial]`` (SEC, eq. (4)).

    .. math::
        G_k(S; d_k) = \frac{1}{Z(d_k)} \sum_{j=1}^{N} d_k^{\,j-1} S_{k, i_j},
        \qquad Z(d) = \sum_{j=1}^{N} d^{\,j-1},

    where :math:`i_1, \dots, i_N` orders the pixels by decreasing :math:`S_k`. ``d = 1`` gives
    mean pooling, ``d = 0`` max pooling (:math:`0^0 = 1`).

    Args:
        probs: Tensor[B, K, *spatial].
        decay: Tensor[B, K] (or broadcastable), values in [0, 1].
    """
    values = probs.flatten(2).sort(dim=2, descending=True).values  # (B, K, N)
    rank = torch.arange(values.shape[2], device=probs.device, dtype=values.dtype)  # (N,)
    weights = decay.to(values).unsqueeze(-1).pow(rank)  # (B, K, N)
    return (values * weights).sum(dim=2) / weights.sum(dim=2)


def expansion_loss(
    probs: Tensor,
    tags: Tensor,
    *,
    q_fg: float = 0.996,
    q_bg: float = 0.999,
    q_absent: float = 0.0,
    background_index: int | None = 0,
) -> Tensor:
    r"""Expansion loss: image-level classification from global weighted rank pooling (GWRP).

    With :math:`G_k` the GWRP of :math:`S_k` (:func:`global_weighted_rank_pooling`), :math:`T`
    the foreground classes tagged present and :math:`\bar T` those absent,

    .. math::
        L_{expand} = -\frac{1}{|T|} \sum_{k \in T} \log G_k(S; q_{fg})
                     -\frac{1}{|\bar T|} \sum_{k \in \bar T} \log\big(1 - G_k(S; q_{absent})\big)
                     -\log G_{bg}(S; q_{bg}),

    per image, averaged over the batch; a sum over an empty set counts 0. SEC's decays are
    ``q_fg=0.996``, ``q_bg=0.999`` (background is expected to cover more of the image) and
    ``q_absent=0`` (max pooling: every pixel of an absent class must have low probability).
    The background class is always present: ``tags[:, background_index]`` is ignored. With
    ``background_index=None`` every class is treated as foreground.

    Args:
        probs: Tensor[B, K, *spatial], softmax probabilities.
        tags: Tensor[B, K] bool or 0/1, the image-level labels.
        q_fg, q_bg, q_absent: decays in [0, 1] for present foreground, background and absent
            classes (1 = mean pooling, 0 = max pooling).
        background_index: the background class id, or ``None``.

    Returns:
        Tensor[] (scalar), float32 (float64 for float64 ``probs``).

    Raises:
        ValueError: a decay outside [0, 1], ``tags`` of shape other than ``[B, K]`` or not 0/1,
            ``background_index`` outside ``0..K-1``, ``probs`` not probabilities.
        TypeError: non-tensor inputs, integer ``probs``.

    Example:
        >>> probs = torch.full((1, 2, 4, 4), 0.5)
        >>> expansion_loss(probs, torch.tensor([[1, 1]]))  # -log(0.5) - log(0.5)
        tensor(1.3863)
    """
    q_fg = _check_decay("q_fg", q_fg)
    q_bg = _check_decay("q_bg", q_bg)
    q_absent = _check_decay("q_absent", q_absent)
    check_probs(probs, None)
    tags = _check_tags(tags, probs)
    _check_background_index(background_index, probs.shape[1])
    probs = probs.to(_compute_dtype(probs))
    pooled = global_weighted_rank_pooling(
        probs, _decays(tags, background_index, q_fg, q_bg, q_absent, probs.dtype)
    )  # (B, K)
    foreground = torch.ones_like(tags)
    if background_index is not None:
        foreground[:, background_index] = False
    present = tags & foreground
    absent = ~tags & foreground
    zero = pooled.new_zeros(())
    present_term = torch.where(present, -_safe_log(pooled), zero).sum(dim=1)
    absent_term = torch.where(absent, -_safe_log(1 - pooled), zero).sum(dim=1)
    loss = present_term / present.sum(dim=1).clamp_min(1) + absent_term / absent.sum(
        dim=1
    ).clamp_min(1)  # (B,)
    if background_index is not None:
        loss = loss - _safe_log(pooled[:, background_index])
    return loss.mean()


def constrain_to_boundary_loss(
    probs: Tensor,
    images: Tensor,
    valid_mask: Tensor | None = None,
    *,
    n_iter: int = SEC_N_ITER,
    w_bilateral: float = SEC_W_BILATERAL,
    theta_alpha: float = SEC_THETA_ALPHA,
    theta_beta: float = SEC_THETA_BETA,
    w_gaussian: float = SEC_W_GAUSSIAN,
    theta_gamma: float = SEC_THETA_GAMMA,
    normalization: str = "symmetric",
    backend: str = "lattice",
    backprop_crf: bool = False,
) -> Tensor:
    r"""Constrain-to-boundary loss: KL divergence from the dense CRF refinement of S to S.

    .. math::
        Q = \mathrm{MF}\big(\log S, I\big), \qquad
        L_{constrain} = \frac{1}{B} \sum_b \frac{1}{|\Omega_b|} \sum_{p \in \Omega_b}
                        \sum_k Q_{pk} \log \frac{Q_{pk}}{S_{pk}}

    where :math:`\mathrm{MF}` is mean-field inference of the fully connected CRF
    (:func:`~weakseg.crf.dense_crf_inference`) with unaries :math:`-\log S` (log-probabilities
    passed as logits) and :math:`\Omega_b` the valid pixels of image ``b``. By default no
    gradient flows through :math:`Q` (``backprop_crf=False``, the ``*`` variant of Table 3 and
    the DenseCRF-ADM view of Sec. 3): the gradient is :math:`-Q / (S\,|\Omega_b| B)`.
    ``backprop_crf=True`` also differentiates through the mean-field iterations.

    The CRF runs at the resolution of ``probs``: ``images`` at another size are resized to it
    (bilinear, as SEC's CRF layer does), and the spatial stds are in pixels of ``probs``. The
    defaults are SEC's: the Krähenbühl-Koltun parameters (bilateral weight 10, xy std 80,
    colour std 13; Gaussian weight 3, xy std 3; 10 iterations) with the xy stds divided by 12
    for the 41x41 score map of a 321x321 crop. SEC additionally clips :math:`Q/S` to
    [0.05, 20] in its code; this is the plain KL of its paper.

    Args:
        probs: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], softmax probabilities.
        images: Tensor[B, C, *spatial'], 0-255 intensities (RGB, gray or any channels), at the
            resolution of ``probs`` or any other (resized).
        valid_mask: optional bool Tensor[B, *spatial] (spatial of ``probs``); padding is left
            out of the CRF and of the average.
        n_iter, w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, normalization,
            backend: as in :func:`~weakseg.crf.dense_crf_inference`.
        backprop_crf: differentiate through the mean-field output too.

    Returns:
        Tensor[] (scalar) >= 0, float32 (float64 for float64 ``probs``).

    Raises:
        ValueError / TypeError: as :func:`~weakseg.crf.dense_crf_inference` for the CRF
            parameters; ``probs`` not probabilities; batch, dims or device mismatch between
            ``probs`` and ``images``; a ``valid_mask`` of the wrong shape or dtype.

    Example:
        >>> probs = torch.randn(1, 3, 8, 8).softmax(dim=1).requires_grad_()
        >>> loss = constrain_to_boundary_loss(probs, torch.rand(1, 3, 8, 8) * 255,
        ...                                   backend="exact")
        >>> loss.backward()
    """
    check_probs(probs, check_valid_mask(valid_mask, probs))
    images = _resize_images(images, probs)
    probs = probs.to(_compute_dtype(probs))
    if valid_mask is not None:
        # Padding may hold anything (even NaN); uniform there keeps the CRF input finite, and
        # those pixels neither send messages nor enter the average.
        probs = torch.where(valid_mask.unsqueeze(1), probs, 1.0 / probs.shape[1])
    log_probs = _safe_log(probs)
    with torch.set_grad_enabled(backprop_crf and torch.is_grad_enabled()):
        refined = dense_crf_inference(
            log_probs if backprop_crf else log_probs.detach(),
            images,
            n_iter=n_iter,
            w_bilateral=w_bilateral,
            theta_alpha=theta_alpha,
            theta_beta=theta_beta,
            w_gaussian=w_gaussian,
            theta_gamma=theta_gamma,
            normalization=normalization,
            backend=backend,
            valid_mask=valid_mask,
        )  # (B, K, *spatial)
    kl = (torch.xlogy(refined, refined) - refined * log_probs).sum(dim=1)  # (B, *spatial)
    if valid_mask is None:
        return kl.flatten(1).mean(dim=1).mean()
    kl = torch.where(valid_mask, kl, 0)
    count = valid_mask.flatten(1).sum(dim=1).clamp_min(1).to(kl.dtype)
    return (kl.flatten(1).sum(dim=1) / count).mean()


class SECLossOutput(NamedTuple):
    """What :func:`sec_loss` returns: the total and its three (unweighted) terms, all scalars.

    ``loss = seed_weight * seeding + expand_weight * expansion + boundary_weight * boundary``
    (``boundary`` is 0 with ``boundary="none"``); only ``loss`` needs backward, the terms are
    there for logging.
    """

    loss: Tensor
    seeding: Tensor
    expansion: Tensor
    boundary: Tensor


def sec_loss(
    probs: Tensor,
    images: Tensor,
    cues: Tensor,
    tags: Tensor,
    valid_mask: Tensor | None = None,
    *,
    boundary: Boundary = "crf_inference",
    seed_weight: float = 1.0,
    expand_weight: float = 1.0,
    boundary_weight: float = 1.0,
    scale_factor: float = 1.0,
    q_fg: float = 0.996,
    q_bg: float = 0.999,
    q_absent: float = 0.0,
    background_index: int | None = 0,
    n_iter: int = SEC_N_ITER,
    w_bilateral: float = SEC_W_BILATERAL,
    theta_alpha: float = SEC_THETA_ALPHA,
    theta_beta: float = SEC_THETA_BETA,
    w_gaussian: float = SEC_W_GAUSSIAN,
    theta_gamma: float = SEC_THETA_GAMMA,
    crf_normalization: str = "symmetric",
    backprop_crf: bool = False,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 80.0,
    loss_normalization: str = "affinity",
    backend: str = "lattice",
) -> SECLossOutput:
    r"""The SEC training loss, or its Table 3 variants with the dense CRF loss or without a
    boundary term.

    .. math::
        L = w_{s}\,L_{seed}(S, C) + w_{e}\,L_{expand}(S, T) + w_{b}\,L_{boundary}(S, I)

    with :math:`L_{boundary}` = :func:`constrain_to_boundary_loss` for
    ``boundary="crf_inference"`` (SEC), :func:`~weakseg.losses.dense_crf_loss` for
    ``boundary="dense_crf_loss"`` (Tang et al., Table 3: no iterative inference) or 0 for
    ``boundary="none"``. SEC weighs the three terms equally (all weights 1).

    With ``scale_factor < 1`` the three terms act on ``probs`` resized by that factor (bilinear;
    SEC's losses act on the 41x41 score map of a 321x321 crop, ``scale_factor=0.125``), the cues
    max-pooled to that size (a cell is a cue of every class cued inside it) and ``valid_mask``
    resized (nearest). ``images`` are resized (bilinear) to that size for either boundary term,
    so every spatial std (``theta_*``, ``sigma_xy``) is in pixels of the map the losses act on:
    for a score map at output stride 8, divide image-pixel stds by 8. The GWRP decays depend on
    that map's size too (SEC's are for 41x41). ``valid_mask`` only affects the boundary term
    (seeds and tags have no padding issue: leave padded pixels without cue).

    Args:
        probs: Tensor[B, K, *spatial], softmax probabilities.
        images: Tensor[B, C, *spatial'], 0-255 intensities.
        cues: Tensor[B, K, *spatial] bool or 0/1, see :func:`seeding_loss`.
        tags: Tensor[B, K] bool or 0/1, see :func:`expansion_loss`.
        valid_mask: optional bool Tensor[B, *spatial].
        boundary: ``"crf_inference"``, ``"dense_crf_loss"`` or ``"none"``.
        seed_weight, expand_weight, boundary_weight: the weights (>= 0) of the three terms.
        scale_factor: in (0, 1], the resolution of the losses relative to ``probs``.
        q_fg, q_bg, q_absent, background_index: see :func:`expansion_loss`.
        n_iter, w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, backprop_crf:
            see :func:`constrain_to_boundary_loss` (``crf_normalization`` is its
            ``normalization``); used with ``boundary="crf_inference"``.
        sigma_rgb, sigma_xy, loss_normalization: the dense CRF loss parameters (its
            ``normalization``); used with ``boundary="dense_crf_loss"``.
        backend: ``"lattice"`` or ``"exact"``, for either boundary term.

    Returns:
        :class:`SECLossOutput` ``(loss, seeding, expansion, boundary)``.

    Raises:
        ValueError: an unknown ``boundary``, a negative weight, a ``scale_factor`` outside
            (0, 1] or one that shrinks ``probs`` to nothing, and everything the three terms
            raise.
    """
    check_choice("boundary", boundary, BOUNDARIES)
    seed_weight = check_nonnegative("seed_weight", seed_weight)
    expand_weight = check_nonnegative("expand_weight", expand_weight)
    boundary_weight = check_nonnegative("boundary_weight", boundary_weight)
    scale_factor = _check_scale_factor(scale_factor)
    if scale_factor != 1:
        check_probs(probs, check_valid_mask(valid_mask, probs))
        probs, cues, valid_mask = _rescale(
            probs, _check_cues(cues, probs), valid_mask, scale_factor
        )
    seed = seeding_loss(probs, cues)
    expand = expansion_loss(
        probs, tags, q_fg=q_fg, q_bg=q_bg, q_absent=q_absent, background_index=background_index
    )
    if boundary == "crf_inference":
        constrain = constrain_to_boundary_loss(
            probs,
            images,
            valid_mask,
            n_iter=n_iter,
            w_bilateral=w_bilateral,
            theta_alpha=theta_alpha,
            theta_beta=theta_beta,
            w_gaussian=w_gaussian,
            theta_gamma=theta_gamma,
            normalization=crf_normalization,
            backend=backend,
            backprop_crf=backprop_crf,
        )
    elif boundary == "dense_crf_loss":
        constrain = dense_crf_loss(
            _resize_images(images, probs),
            probs,
            valid_mask,
            sigma_rgb=sigma_rgb,
            sigma_xy=sigma_xy,
            normalization=loss_normalization,  # type: ignore[arg-type]
            backend=backend,  # type: ignore[arg-type]
        )
    else:
        constrain = seed.new_zeros(())
    total = seed_weight * seed + expand_weight * expand + boundary_weight * constrain
    return SECLossOutput(total, seed, expand, constrain)


class SeedingLoss(nn.Module):
    """``weight * seeding_loss(probs, cues)``; see :func:`seeding_loss`."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, probs: Tensor, cues: Tensor) -> Tensor:
        return self.weight * seeding_loss(probs, cues)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


class ExpansionLoss(nn.Module):
    """``weight * expansion_loss(probs, tags, ...)``; see :func:`expansion_loss`."""

    def __init__(
        self,
        weight: float = 1.0,
        *,
        q_fg: float = 0.996,
        q_bg: float = 0.999,
        q_absent: float = 0.0,
        background_index: int | None = 0,
    ) -> None:
        super().__init__()
        self.weight = float(weight)
        self.q_fg = _check_decay("q_fg", q_fg)
        self.q_bg = _check_decay("q_bg", q_bg)
        self.q_absent = _check_decay("q_absent", q_absent)
        self.background_index = background_index

    def forward(self, probs: Tensor, tags: Tensor) -> Tensor:
        return self.weight * expansion_loss(
            probs,
            tags,
            q_fg=self.q_fg,
            q_bg=self.q_bg,
            q_absent=self.q_absent,
            background_index=self.background_index,
        )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, q_fg={self.q_fg}, q_bg={self.q_bg}, "
            f"q_absent={self.q_absent}, background_index={self.background_index}"
        )


class ConstrainToBoundaryLoss(nn.Module):
    """``weight * constrain_to_boundary_loss(probs, images, valid_mask, ...)``; see
    :func:`constrain_to_boundary_loss`."""

    def __init__(
        self,
        weight: float = 1.0,
        *,
        n_iter: int = SEC_N_ITER,
        w_bilateral: float = SEC_W_BILATERAL,
        theta_alpha: float = SEC_THETA_ALPHA,
        theta_beta: float = SEC_THETA_BETA,
        w_gaussian: float = SEC_W_GAUSSIAN,
        theta_gamma: float = SEC_THETA_GAMMA,
        normalization: str = "symmetric",
        backend: str = "lattice",
        backprop_crf: bool = False,
    ) -> None:
        super().__init__()
        self.weight = float(weight)
        self.n_iter = n_iter
        self.w_bilateral = float(w_bilateral)
        self.theta_alpha = check_positive("theta_alpha", theta_alpha)
        self.theta_beta = check_positive("theta_beta", theta_beta)
        self.w_gaussian = float(w_gaussian)
        self.theta_gamma = check_positive("theta_gamma", theta_gamma)
        self.normalization = normalization
        self.backend = backend
        self.backprop_crf = bool(backprop_crf)

    def forward(self, probs: Tensor, images: Tensor, valid_mask: Tensor | None = None) -> Tensor:
        return self.weight * constrain_to_boundary_loss(
            probs,
            images,
            valid_mask,
            n_iter=self.n_iter,
            w_bilateral=self.w_bilateral,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            w_gaussian=self.w_gaussian,
            theta_gamma=self.theta_gamma,
            normalization=self.normalization,
            backend=self.backend,
            backprop_crf=self.backprop_crf,
        )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, n_iter={self.n_iter}, w_bilateral={self.w_bilateral}, "
            f"theta_alpha={self.theta_alpha:.4g}, theta_beta={self.theta_beta}, "
            f"w_gaussian={self.w_gaussian}, theta_gamma={self.theta_gamma:.4g}, "
            f"normalization={self.normalization!r}, backend={self.backend!r}, "
            f"backprop_crf={self.backprop_crf}"
        )


class SECLoss(nn.Module):
    """Holds the hyper-parameters of :func:`sec_loss`; ``forward`` returns its
    :class:`SECLossOutput`.

    Every hyper-parameter is checked here, also those of the boundary term not in use, so that
    a bad value fails when the loss is built rather than at its first call. It is the
    ``losses: {sec: ...}`` training mode of ``weakseg train`` (see
    :mod:`weakseg.engine.config`).

    Example:
        >>> criterion = SECLoss(boundary="dense_crf_loss", sigma_xy=10.0, backend="exact")
        >>> probs = torch.randn(1, 2, 8, 8).softmax(dim=1)
        >>> cues = torch.zeros(1, 2, 8, 8, dtype=torch.bool); cues[0, 0, 0] = True
        >>> out = criterion(probs, torch.rand(1, 3, 8, 8) * 255, cues, torch.tensor([[1, 1]]))
        >>> out.loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        boundary: Boundary = "crf_inference",
        seed_weight: float = 1.0,
        expand_weight: float = 1.0,
        boundary_weight: float = 1.0,
        scale_factor: float = 1.0,
        q_fg: float = 0.996,
        q_bg: float = 0.999,
        q_absent: float = 0.0,
        background_index: int | None = 0,
        n_iter: int = SEC_N_ITER,
        w_bilateral: float = SEC_W_BILATERAL,
        theta_alpha: float = SEC_THETA_ALPHA,
        theta_beta: float = SEC_THETA_BETA,
        w_gaussian: float = SEC_W_GAUSSIAN,
        theta_gamma: float = SEC_THETA_GAMMA,
        crf_normalization: str = "symmetric",
        backprop_crf: bool = False,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 80.0,
        loss_normalization: str = "affinity",
        backend: str = "lattice",
    ) -> None:
        super().__init__()
        check_choice("boundary", boundary, BOUNDARIES)
        check_choice("crf_normalization", crf_normalization, CRF_NORMALIZATIONS)
        check_choice("loss_normalization", loss_normalization, NORMALIZATIONS)
        if not isinstance(backprop_crf, bool):
            raise TypeError(f"backprop_crf must be true or false, got {backprop_crf!r}")
        if background_index is not None:  # its upper bound (K - 1) is checked at the call
            _check_background_index(background_index, background_index + 1)
        self.boundary = boundary
        self.seed_weight = check_nonnegative("seed_weight", seed_weight)
        self.expand_weight = check_nonnegative("expand_weight", expand_weight)
        self.boundary_weight = check_nonnegative("boundary_weight", boundary_weight)
        self.scale_factor = _check_scale_factor(scale_factor)
        self.q_fg = _check_decay("q_fg", q_fg)
        self.q_bg = _check_decay("q_bg", q_bg)
        self.q_absent = _check_decay("q_absent", q_absent)
        self.background_index = background_index
        self.n_iter = check_n_iter(n_iter)
        (
            self.w_bilateral,
            self.theta_alpha,
            self.theta_beta,
            self.w_gaussian,
            self.theta_gamma,
        ) = check_kernel_parameters(
            w_bilateral,
            theta_alpha,
            theta_beta,
            w_gaussian,
            theta_gamma,
            crf_normalization,
            backend,
        )
        self.crf_normalization = crf_normalization
        self.backprop_crf = backprop_crf
        self.sigma_rgb = check_positive("sigma_rgb", sigma_rgb)
        self.sigma_xy = check_positive("sigma_xy", sigma_xy)
        self.loss_normalization = loss_normalization
        self.backend = backend

    def forward(
        self,
        probs: Tensor,
        images: Tensor,
        cues: Tensor,
        tags: Tensor,
        valid_mask: Tensor | None = None,
    ) -> SECLossOutput:
        """``probs [B, K, *spatial]``, ``images [B, C, *spatial']`` (0-255), ``cues [B, K,
        *spatial]``, ``tags [B, K]``, ``valid_mask [B, *spatial]`` -> :class:`SECLossOutput`."""
        return sec_loss(
            probs,
            images,
            cues,
            tags,
            valid_mask,
            boundary=self.boundary,
            seed_weight=self.seed_weight,
            expand_weight=self.expand_weight,
            boundary_weight=self.boundary_weight,
            scale_factor=self.scale_factor,
            q_fg=self.q_fg,
            q_bg=self.q_bg,
            q_absent=self.q_absent,
            background_index=self.background_index,
            n_iter=self.n_iter,
            w_bilateral=self.w_bilateral,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            w_gaussian=self.w_gaussian,
            theta_gamma=self.theta_gamma,
            crf_normalization=self.crf_normalization,
            backprop_crf=self.backprop_crf,
            sigma_rgb=self.sigma_rgb,
            sigma_xy=self.sigma_xy,
            loss_normalization=self.loss_normalization,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        common = (
            f"boundary={self.boundary!r}, seed_weight={self.seed_weight}, "
            f"expand_weight={self.expand_weight}, boundary_weight={self.boundary_weight}, "
            f"scale_factor={self.scale_factor}, q_fg={self.q_fg}, q_bg={self.q_bg}, "
            f"q_absent={self.q_absent}, background_index={self.background_index}"
        )
        if self.boundary == "crf_inference":
            specific = (
                f", n_iter={self.n_iter}, w_bilateral={self.w_bilateral}, "
                f"theta_alpha={self.theta_alpha:.4g}, theta_beta={self.theta_beta}, "
                f"w_gaussian={self.w_gaussian}, theta_gamma={self.theta_gamma:.4g}, "
                f"crf_normalization={self.crf_normalization!r}, "
                f"backprop_crf={self.backprop_crf}"
            )
        elif self.boundary == "dense_crf_loss":
            specific = (
                f", sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
                f"loss_normalization={self.loss_normalization!r}"
            )
        else:
            return common
        return f"{common}{specific}, backend={self.backend!r}"
