"""Inference (multi-scale, flip, dense CRF post-processing) and evaluation against full masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from weakseg.crf import dense_crf_inference
from weakseg.engine.metrics import ConfusionMatrix

__all__ = ["evaluate", "predict_probs"]


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
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on ``loader`` (batches with ``mask``), summed over every
    process when distributed. The model is put in eval mode and left so."""
    model.eval()
    confusion = ConfusionMatrix(num_classes)
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
        target = batch["mask"].to(device).masked_fill(~valid, 255)
        confusion.update(probs.argmax(dim=1), target)
    confusion.reduce()
    return confusion
