"""Inference (multi-scale, flip, dense CRF post-processing) and evaluation against full masks:
per-slice (pooled confusion matrix) and per-volume (3D Dice, HD95; largest-component
post-processing optional)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from weakseg.crf import dense_crf_inference
from weakseg.data.volumes import volume_key
from weakseg.engine.metrics import ConfusionMatrix
from weakseg.engine.volume_metrics import VolumeAccumulator, VolumeScores, summarize_volumes

__all__ = ["Evaluation", "evaluate", "predict_probs"]


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    image_raw: Tensor | None = None,
    valid_mask: Tensor | None = None,
    crf: dict[str, Any] | None = None,
) -> Tensor:
    """Class probabilities of ``model`` (in eval mode) for a normalized image batch.

    The softmax outputs at every scale (bilinear resize of the input, output resized back) and,
    with ``flip``, of the horizontally flipped input are averaged. ``crf`` (keyword arguments of
    :func:`weakseg.crf.dense_crf_inference`, ``{}`` for its defaults) then refines them with
    mean-field inference on ``image_raw``.

    Args:
        model: network mapping ``[B, C, H, W]`` to logits ``[B, K, h, w]``.
        image: Tensor[B, C, H, W], network-normalized.
        scales: input scale factors (> 0).
        flip: also average over the horizontal flip.
        image_raw: Tensor[B, C, H, W] in 0-255, needed with ``crf``.
        valid_mask: Tensor[B, H, W] bool, pixels the CRF may use (padding excluded).
        crf: ``None`` (no post-processing) or dense CRF parameters.

    Returns:
        Tensor[B, K, H, W] float32 probabilities.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive factors, got {scales!r}")
    size = image.shape[-2:]
    total = None
    count = 0
    for scale in scales:
        scaled = image
        if scale != 1.0:
            scaled = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        views = [(scaled, False), (scaled.flip(-1), True)] if flip else [(scaled, False)]
        for view, flipped in views:
            logits = model(view).float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
            count += 1
    probs = total / count
    if crf is not None:
        if image_raw is None:
            raise ValueError("crf post-processing needs image_raw (0-255 intensities)")
        logits = probs.clamp_min(1e-8).log()
        probs = dense_crf_inference(
            logits, image_raw.to(probs.device).float(), valid_mask=valid_mask, **crf
        )
    return probs


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: the per-slice confusion matrix and each volume's scores.

    ``summary(class_names)`` holds every key of :func:`~weakseg.engine.metrics.summarize`
    (per-slice pooled: ``miou``, ``mean_dice``, ...) and of
    :func:`~weakseg.engine.volume_metrics.summarize_volumes` (per volume: ``mean_dice_3d``,
    ``mean_hd95_3d``, ...; absent when volume metrics were off).
    """

    confusion: ConfusionMatrix
    volumes: dict[str, VolumeScores] | None = None

    @property
    def matrix(self) -> Tensor:
        """The confusion matrix ``[K, K]`` (``[true, predicted]``)."""
        return self.confusion.matrix

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        report: dict[str, Any] = self.confusion.summary(class_names)
        if self.volumes is not None:
            names = class_names or [str(k) for k in range(self.confusion.num_classes)]
            report.update(summarize_volumes(self.volumes, names))
        return report


def _slice_records(
    batch: dict[str, Any], pred: Tensor, volume_pattern: str | None
) -> list[tuple[str, int | None, np.ndarray, np.ndarray, tuple | None]]:
    """``(volume, slice, pred [h, w], target [h, w], spacing)`` of each sample of a batch,
    cropped to its valid (unpadded) region, ignored pixels 255 in the target."""
    records = []
    for i in range(pred.shape[0]):
        valid = batch["valid_mask"][i].cpu()
        rows, cols = int(valid.any(1).sum()), int(valid.any(0).sum())
        target = batch["mask"][i].cpu().masked_fill(~valid, 255)[:rows, :cols]
        if "volume" in batch:
            volume, position = batch["volume"][i], int(batch["slice"][i])
        else:
            volume, position = volume_key(batch["id"][i], volume_pattern)
        spacing = None
        if "spacing" in batch:
            spacing = tuple(float(s) for s in batch["spacing"][i])
        records.append(
            (
                volume,
                position,
                pred[i, :rows, :cols].cpu().numpy().astype(np.uint8),
                target.numpy().astype(np.uint8),
                spacing,
            )
        )
    return records


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: dict[str, Any] | None = None,
    progress: bool = False,
    lcc: bool = False,
    volume_metrics: bool = True,
    compute_hd95: bool = True,
    volume_pattern: str | None = None,
) -> Evaluation:
    """Evaluate ``model`` on ``loader`` (batches with ``mask``): the per-slice confusion matrix
    and, with ``volume_metrics``, per-volume 3D Dice and HD95
    (:mod:`weakseg.engine.volume_metrics`). The model is put in eval mode and left so.

    Slices are grouped into volumes by the samples' ``volume`` / ``slice`` (volume files), else
    by :func:`~weakseg.data.volumes.volume_key` of their ``id`` with ``volume_pattern``; each
    volume's slices must come together (they do for volume files and sorted split files).
    When distributed, every process gathers all slices and computes the same result.

    Args:
        lcc: keep the largest connected component per class of each volume (both the per-slice
            and the per-volume metrics then see the post-processed prediction).
        compute_hd95: off: HD95 is NaN (``None`` in the summary), Dice only.
    """
    model.eval()
    accumulator = VolumeAccumulator(
        num_classes, lcc=lcc, compute_hd95=compute_hd95 and volume_metrics
    )
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    gathered = []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        if "mask" not in batch:
            raise ValueError("evaluation needs full masks ('mask' in the samples)")
        valid = batch["valid_mask"].to(device)
        probs = predict_probs(
            model,
            batch["image"].to(device),
            scales=scales,
            flip=flip,
            image_raw=batch["image_raw"],
            valid_mask=valid,
            crf=crf,
        )
        records = _slice_records(batch, probs.argmax(dim=1), volume_pattern)
        if distributed:
            gathered += records
            continue
        for record in records:
            accumulator.add(*record)
    if distributed:
        every: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(every, gathered)
        merged = [record for part in every for record in part]
        merged.sort(key=lambda r: (r[0], -1 if r[1] is None else r[1]))
        for record in merged:
            accumulator.add(*record)
    scores = accumulator.finish()
    return Evaluation(accumulator.confusion, scores if volume_metrics else None)
