r"""ScribbleSup-style iterative proposals: the "ScribbleSup (iterative)" column of Table 2.

Training alternates, offline, between the two steps of Sec. 3: the network is trained on fixed
full-mask proposals :math:`\tilde X` (eq. (7), plain cross-entropy), then its predictions
:math:`\tilde S` on the training images become the next proposals by shallow segmentation with
the scribbles as hard constraints (eq. (8)):

- ``method="crf"``: mean-field inference of the dense CRF
  (:func:`~weakseg.crf.dense_crf_inference`) with unary :math:`-\log \tilde S` and the scribbled
  pixels clamped, then the arg-max of the marginals;
- ``method="grabcut"``: one-vs-rest GrabCut (:func:`~weakseg.proposals.grabcut_proposal`) with
  each class's colour models initialized from the network's arg-max instead of the nearest
  scribble (closer to ScribbleSup, which combines network unaries and GrabCut colour models).

The first round trains on the scribbles alone (partial cross-entropy). With ``proposal_every:
N`` in the training config, the rounds start at epochs ``N, 2N, ...`` and their masks are
written to ``output_dir/proposals/epoch_<start>/<id>.png`` followed by :data:`MANIFEST`, whose
presence marks the folder complete; a resumed run reuses the folder of its current round
(see :mod:`weakseg.engine.train`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from weakseg.crf import dense_crf_inference
from weakseg.data.io import IGNORE_INDEX, write_label
from weakseg.proposals.grabcut import grabcut_proposal

__all__ = [
    "MANIFEST",
    "METHODS",
    "network_proposals",
    "proposal_round",
    "proposals_complete",
    "write_manifest",
    "write_network_proposals",
]

METHODS: tuple[str, ...] = ("crf", "grabcut")
# Written last into a proposal folder: its presence means every mask is there.
MANIFEST = "proposals.json"


def proposal_round(epoch: int, every: int) -> int | None:
    """The first epoch of the proposal round that ``epoch`` belongs to, ``every * (epoch //
    every)``, or ``None`` during the first ``every`` epochs (training on the scribbles).

    Example:
        >>> [proposal_round(e, 2) for e in range(5)]
        [None, None, 2, 2, 4]
    """
    if every < 1:
        raise ValueError(f"every must be >= 1 (epochs), got {every}")
    start = every * (epoch // every)
    return start if start > 0 else None


def proposals_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished set of proposals (its :data:`MANIFEST` exists)."""
    return (Path(folder) / MANIFEST).is_file()


def write_manifest(folder: str | Path, info: dict[str, Any]) -> Path:
    """Mark ``folder`` complete: write ``info`` as JSON to ``folder/`` :data:`MANIFEST`."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


@torch.no_grad()
def network_proposals(
    model: nn.Module,
    image: Tensor,
    image_raw: Tensor,
    scribbles: Tensor,
    *,
    method: str = "crf",
    crf: dict[str, Any] | None = None,
    grabcut_iter: int = 5,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Full-mask proposals from the network's prediction, with the scribbles as hard labels.

    The model is run as given (put it in eval mode first); its logits are resized (bilinear) to
    the image size.

    Args:
        model: network mapping ``[B, C, H, W]`` to logits ``[B, K, h, w]``.
        image: Tensor[B, C, H, W], network-normalized, on the model's device.
        image_raw: Tensor[B, C, H, W], intensities in 0-255 (the CRF / GrabCut features).
        scribbles: Tensor[B, H, W] int class ids, ``ignore_index`` = unlabeled.
        method: ``"crf"`` or ``"grabcut"`` (see the module docstring).
        crf: keyword arguments of :func:`~weakseg.crf.dense_crf_inference` (``method="crf"``).
        grabcut_iter: GrabCut iterations per class (``method="grabcut"``).
        ignore_index: the "unlabeled" id of ``scribbles``.

    Returns:
        int64 Tensor[B, H, W] of class ids on ``image``'s device; scribbled pixels keep their
        label. GrabCut leaves images without any scribble at ``ignore_index``.

    Example:
        >>> model = torch.nn.Conv2d(3, 2, 1)
        >>> raw = torch.rand(1, 3, 8, 8) * 255
        >>> scribbles = torch.full((1, 8, 8), 255); scribbles[0, 0, 0] = 1
        >>> network_proposals(model, raw / 255, raw, scribbles, crf={"backend": "exact"}).shape
        torch.Size([1, 8, 8])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    size = image.shape[-2:]
    if tuple(scribbles.shape) != (image.shape[0], *size):
        raise ValueError(
            f"scribbles must have shape [B, H, W] = {(image.shape[0], *size)} to match the "
            f"image, got {tuple(scribbles.shape)}"
        )
    logits = model(image).float()
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    scribbles = scribbles.to(logits.device).long()
    if method == "crf":
        q = dense_crf_inference(
            logits,
            image_raw.to(logits.device).float(),
            labels=scribbles,
            ignore_index=ignore_index,
            **(crf or {}),
        )  # (B, K, H, W), scribbles clamped
        return q.argmax(dim=1)
    prediction = logits.argmax(dim=1).cpu()  # (B, H, W)
    masks = [
        grabcut_proposal(
            image_raw[b].cpu(),
            scribbles[b].cpu(),
            num_classes=logits.shape[1],
            n_iter=grabcut_iter,
            ignore_index=ignore_index,
            init=prediction[b],
        )
        for b in range(image.shape[0])
    ]
    return torch.from_numpy(np.stack(masks)).long().to(image.device)


def write_network_proposals(
    model: nn.Module,
    dataset: Dataset,
    output_dir: str | Path,
    device: torch.device | str = "cpu",
    *,
    method: str = "crf",
    crf: dict[str, Any] | None = None,
    grabcut_iter: int = 5,
    indices: Sequence[int] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "proposals",
) -> list[Path]:
    """Write :func:`network_proposals` of every sample as ``<output_dir>/<id>.png``.

    Existing files are overwritten; the manifest is not written (call :func:`write_manifest`
    once every process is done). The model is put in eval mode and left so.

    Args:
        model: the network, already on ``device``.
        dataset: untransformed samples (full images) with ``image``, ``image_raw``, ``label``
            (the scribbles) and ``id``, e.g. ``FolderDataset(root, split)`` or the
            ``dataset`` of a :class:`~weakseg.data.LabelFolderDataset`.
        output_dir: folder to write to (created if needed).
        device: where to run the model and the CRF.
        method, crf, grabcut_iter: see :func:`network_proposals`.
        indices: the samples to do (e.g. this process's shard), default all.
        num_workers: DataLoader workers reading the samples.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.

    Returns:
        The paths written, in the order of ``indices``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    subset = dataset if indices is None else Subset(dataset, list(indices))
    # batch 1: images of a split may differ in size, and padding would enter GrabCut
    loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=num_workers)
    model.eval()
    paths = []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        proposal = network_proposals(
            model,
            batch["image"].to(device),
            batch["image_raw"],
            batch["label"],
            method=method,
            crf=crf,
            grabcut_iter=grabcut_iter,
        )
        path = output_dir / f"{batch['id'][0]}.png"
        write_label(path, proposal[0].cpu().numpy().astype(np.uint8))
        paths.append(path)
    return paths
