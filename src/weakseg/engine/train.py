"""The training recipe: ``get_args_parser()`` -> ``main(args)`` -> ``train_one_epoch`` /
``evaluate``, in the style of torchvision's ``references/segmentation``.

Loss = partial cross-entropy on the labeled pixels + the weighted regularizers of
``config.losses`` on the softmax of the logits upsampled to the input size (each term logged
separately). SGD or AdamW, poly LR with linear warm-up, AMP on CUDA, gradient accumulation,
DistributedDataParallel under ``torchrun`` (the same command runs single-process).

The training modes of Table 2 of the paper (see :mod:`weakseg.engine.config`):

- DenseCRF-GD, ``losses: {dense_crf: ...}``: pCE + weighted dense CRF loss by back-propagation.
- DenseCRF-ADM, ``losses: {densecrf_adm: ...}``: per batch, mean-field proposals X with the
  scribbles clamped; the loss pCE + CE(X, S) on the unlabeled pixels replaces pCE
  (:class:`~weakseg.proposals.DenseCRFADMLoss`).
- GrabCut (one time), ``supervision: full`` + ``label_dir``: full masks from a folder.
- ScribbleSup-style iterative proposals, ``proposal_every: N``: scribbles (pCE) for the first N
  epochs, then at the start of every N-th epoch the current network's predictions refined with
  the scribbles clamped are written to ``output_dir/proposals/epoch_<e>/`` and become the
  labels; a resumed run reuses the folder of its round.

Table 3 (image tags), ``losses: {sec: ...}``: SEC's seeding + expansion + constrain-to-boundary
(or dense CRF) loss replaces pCE; the labels are the localization cues (``cue_dir``, or the
scribbles as a stand-in) and the batch's ``tags`` the image-level labels. Table 4's trainable
CRF, ``crf_layer: {...}``: the network is wrapped in a
:class:`~weakseg.models.CRFLayerModel` (CRF-as-RNN on the batch's ``image_raw``), whose
``log Q`` output the losses see; the checkpoint's ``model_config`` records the layer so that
``weakseg eval`` / ``predict`` rebuild the same wrapped model.

Logged terms (``metrics.jsonl``, TensorBoard): ``pce``; each regularizer's *weighted*
contribution under its name (for ADM, ``densecrf_adm`` = the proposal cross-entropy); ``loss``
= their sum; and, not part of the sum, ``dense_crf_value``: the *unweighted* dense CRF loss
``R(S) = sum_k S_k' W (1 - S_k) / 1'W1`` of the batch (the ``"affinity"`` normalization, batch
mean of per-image values, full resolution, the term's own ``sigma_rgb`` / ``sigma_xy``), logged
by ``densecrf_adm`` and by ``dense_crf`` when it is the term divided by its weight (the
"affinity" normalization at ``scale_factor`` 1, as the ADM-vs-GD recipes use), so that gradient
descent and ADM runs can be compared on the same quantity. Other ``dense_crf`` settings do not
log it: it would cost a full-resolution filtering per step.

Files in ``output_dir``: ``checkpoint.pth`` (the latest state: every ``checkpoint_every``
iterations, after each epoch, at the end and on SIGINT/SIGTERM), ``best.pth`` (best validation
mIoU), ``metrics.jsonl`` (one JSON line per epoch), ``losses.jsonl`` (one JSON line every
``log_every`` iterations, ``{"iteration", "epoch", "lr", <each loss term>: value}``: the main
process's step, appended to on resume; ``weakseg viz curves`` plots it), ``config.yaml`` and
TensorBoard events when the ``tensorboard`` package is installed. ``resume`` continues exactly:
model, optimizer, LR schedule position, AMP scaler, RNG states and the position inside the epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from weakseg import __version__
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from weakseg.engine.config import ConfigError, TrainConfig, build_regularizers, load_config
from weakseg.engine.evaluate import evaluate
from weakseg.engine.loaders import (
    build_datasets,
    build_train_loader,
    build_val_loader,
    label_folder,
)
from weakseg.losses import DenseCRFLoss, SECLoss, cues_from_labels, partial_cross_entropy
from weakseg.models import build_crf_layer_model, build_model
from weakseg.proposals import (
    DenseCRFADMLoss,
    proposal_round,
    proposals_complete,
    write_manifest,
    write_network_proposals,
)
from weakseg.proposals.iterative import MANIFEST

__all__ = [
    "TrainingInterrupted",
    "compute_loss",
    "get_args_parser",
    "main",
    "poly_lr_lambda",
    "train",
    "train_one_epoch",
]


class TrainingInterrupted(Exception):
    """Raised after SIGINT / SIGTERM once the checkpoint is written; ``signum`` says which."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint: {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


class _StopFlag:
    """Turns SIGINT / SIGTERM into a flag read between iterations; a second signal acts as
    usual (the handlers are restored at the first one)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def requested(self, distributed: bool, device: torch.device) -> int | None:
        """The signal number when any process got one (all processes agree)."""
        if not distributed:
            return self.signum
        flag = torch.tensor([self.signum or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def poly_lr_lambda(
    total_iterations: int,
    power: float = 0.9,
    warmup_iterations: int = 0,
    warmup_factor: float = 0.001,
):
    """LR multiplier at iteration ``i``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_iterations``, then ``(1 - (i - w) / (total - w)) ** power`` (DeepLab's poly)."""

    def factor(iteration: int) -> float:
        if iteration < warmup_iterations:
            alpha = iteration / warmup_iterations
            return warmup_factor * (1 - alpha) + alpha
        span = max(total_iterations - warmup_iterations, 1)
        return max(1 - (iteration - warmup_iterations) / span, 0.0) ** power

    return factor


def compute_loss(
    logits: Tensor, batch: dict[str, Tensor], regularizers: dict[str, nn.Module]
) -> tuple[Tensor, dict[str, float]]:
    r"""Partial cross-entropy (or DenseCRF-ADM, or SEC) plus the regularizers, on logits
    upsampled to the input size.

    .. math::
        L = \ell_{pCE}(S, Y) + \sum_r \lambda_r R_r(S)
        \quad\text{or, with ADM,}\quad
        L = \ell_{pCE}(S, Y) + \frac{1}{|\Omega_U|} \sum_{p \in \Omega_U} H(X_p, S_p)
            + \sum_r \lambda_r R_r(S)

    and with SEC (Table 3) :math:`L = L_{SEC}(S, C, T, I) + \sum_r \lambda_r R_r(S)`, the cues
    :math:`C` being the labels (each labeled pixel a cue of its class) and :math:`T` the tags.

    Args:
        logits: Tensor[B, K, h, w] network output (any resolution).
        batch: ``label`` Tensor[B, H, W] (255 = unlabeled), ``image_raw`` Tensor[B, C, H, W]
            (0-255), ``valid_mask`` Tensor[B, H, W] bool, and for SEC ``tags`` Tensor[B, K]
            bool; on the logits' device.
        regularizers: name -> loss module (already weighted, e.g. ``DenseCRFLoss(weight=...)``);
            at most one that replaces partial cross-entropy: a
            :class:`~weakseg.proposals.DenseCRFADMLoss` (it contains pCE) or a
            :class:`~weakseg.losses.SECLoss`.

    Returns:
        The total loss Tensor[] and every term's value as floats: ``pce`` (SEC: ``seeding``,
        ``expansion`` and, unless its ``boundary`` is ``"none"``, ``boundary``, each weighted),
        then each regularizer's weighted contribution (ADM: the proposal cross-entropy),
        ``loss`` = their sum; with ``densecrf_adm`` or an "affinity"-normalized full-resolution
        ``dense_crf``, also ``dense_crf_value`` (the unweighted dense CRF loss, see the module
        docstring), which is not part of the sum.
    """
    label = batch["label"]
    logits = logits.float()
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    adm = {n: m for n, m in regularizers.items() if isinstance(m, DenseCRFADMLoss)}
    sec = {n: m for n, m in regularizers.items() if isinstance(m, SECLoss)}
    if len(adm) + len(sec) > 1:
        raise ValueError(
            f"at most one loss that replaces partial cross-entropy, got {', '.join([*adm, *sec])}"
        )
    if sec:
        total, terms = _sec_terms(next(iter(sec.values())), logits, batch)
    else:
        pce = partial_cross_entropy(logits, label)
        total = pce
        terms = {"pce": pce.detach()}
    for name, module in adm.items():  # replaces pCE, which it contains
        out = module(logits, batch["image_raw"], label, batch["valid_mask"])
        total = out.loss
        terms[name] = (out.loss - pce).detach()
        terms["dense_crf_value"] = out.dense_crf_loss
    others = {n: m for n, m in regularizers.items() if n not in adm and n not in sec}
    if others:
        probs = logits.softmax(dim=1)  # (B, K, H, W) at full resolution
        for name, regularizer in others.items():
            value = regularizer(batch["image_raw"], probs, batch["valid_mask"])
            terms[name] = value.detach()
            total = total + value
            if isinstance(regularizer, DenseCRFLoss):
                unweighted = _dense_crf_value(regularizer, value)
                if unweighted is not None:
                    terms["dense_crf_value"] = unweighted
    terms["loss"] = total.detach()
    return total, {k: float(v) for k, v in terms.items()}


def _sec_terms(
    module: SECLoss, logits: Tensor, batch: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """SEC's loss on ``logits [B, K, H, W]`` and its weighted terms: the cues are the labels
    ``[B, H, W]`` (255 = no cue), the tags ``batch["tags"] [B, K]``."""
    probs = logits.softmax(dim=1)  # (B, K, H, W)
    cues = cues_from_labels(batch["label"], probs.shape[1])  # (B, K, H, W)
    out = module(probs, batch["image_raw"], cues, batch["tags"], batch["valid_mask"])
    terms = {
        "seeding": module.seed_weight * out.seeding.detach(),
        "expansion": module.expand_weight * out.expansion.detach(),
    }
    if module.boundary != "none":
        terms["boundary"] = module.boundary_weight * out.boundary.detach()
    return out.loss, terms


def _dense_crf_value(regularizer: DenseCRFLoss, weighted: Tensor) -> Tensor | None:
    """The unweighted ``"affinity"``-normalized dense CRF loss at full resolution when it comes
    for free (the training term divided by its weight, when the term is that quantity), else
    ``None``: recomputing it would cost one more full-resolution filtering per step."""
    if (
        regularizer.normalization == "affinity"
        and regularizer.scale_factor == 1.0
        and regularizer.weight != 0.0
    ):
        return weighted.detach() / regularizer.weight
    return None


def train_step(
    model: nn.Module,
    batches: list[dict[str, Any]],
    regularizers: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One optimizer step over ``len(batches)`` accumulated batches; returns the mean terms."""
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    use_amp = config.amp and device.type == "cuda"
    for index, batch in enumerate(batches):
        batch = {
            k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()
        }
        last = index == len(batches) - 1
        # DDP: all-reduce gradients on the last accumulated batch only
        skip_sync = not last and hasattr(model, "no_sync")
        sync = model.no_sync() if skip_sync else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, enabled=use_amp):
                if config.crf_layer is not None:  # the CRF layer filters the 0-255 image
                    logits = model(batch["image"], batch["image_raw"])
                else:
                    logits = model(batch["image"])
            loss, terms = compute_loss(logits, batch, regularizers)
            if not math.isfinite(terms["loss"]):
                raise FloatingPointError(f"non-finite loss: {terms}")
            scaler.scale(loss / len(batches)).backward()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value / len(batches)
    if config.clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return sums


def _grouped(loader: Iterator, size: int, steps: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(loader)
    for _ in range(steps):
        group = []
        for _ in range(size):
            group.append(next(iterator))
        yield group


def train_one_epoch(
    model: nn.Module,
    regularizers: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: LambdaLR,
    scaler: torch.amp.GradScaler,
    loader: torch.utils.data.DataLoader,
    steps: int,
    state: dict[str, Any],
    config: TrainConfig,
    device: torch.device,
    context: dict[str, Any],
) -> dict[str, float]:
    """Run ``steps`` optimizer steps from ``loader``; returns the mean of each loss term.

    ``state["iteration"]`` counts the steps; a checkpoint is written every
    ``checkpoint_every`` of them, and a stop signal ends the epoch early after writing one
    (``state["stopped"]`` = the signal number).
    """
    model.train()
    totals: dict[str, float] = {}
    done = 0
    bar = tqdm(
        total=steps,
        desc=f"epoch {state['epoch']}",
        disable=not (config.progress and context["main"]),
        dynamic_ncols=True,
        leave=False,
    )
    for batches in _grouped(loader, config.accumulate, steps):
        terms = train_step(model, batches, regularizers, optimizer, scaler, config, device)
        lr_scheduler.step()
        state["iteration"] += 1
        done += 1
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
        writer = context.get("writer")
        if state["iteration"] % config.log_every == 0:
            lr = optimizer.param_groups[0]["lr"]
            if writer is not None:
                for key, value in terms.items():
                    writer.add_scalar(f"train/{key}", value, state["iteration"])
                writer.add_scalar("train/lr", lr, state["iteration"])
            if context["main"]:
                line = {"iteration": state["iteration"], "epoch": state["epoch"], "lr": lr, **terms}
                # opened per line: flushed and closed at once, appended to on resume
                with open(Path(config.output_dir) / "losses.jsonl", "a") as stream:
                    stream.write(json.dumps(line) + "\n")
        signum = context["stop"].requested(context["distributed"], device)
        if signum is not None:
            state["stopped"] = signum
            break
        if state["iteration"] >= state["total"]:
            break
        if state["iteration"] % config.checkpoint_every == 0:
            context["save"]()
    bar.close()
    means = {k: v / max(done, 1) for k, v in totals.items()}
    if context["distributed"]:
        keys = sorted(means)
        values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        means = dict(zip(keys, (values / dist.get_world_size()).tolist(), strict=True))
    return means


def _use_proposals(
    epoch: int,
    position: int,
    dataset: Any,
    model: nn.Module,
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world_size: int,
) -> None:
    """Iterative proposals: point the training labels of ``dataset`` (a
    :class:`~weakseg.data.LabelFolderDataset`) at the folder of ``epoch``'s round.

    The first round uses the scribbles. At the start of a later round (its first epoch, at
    ``position`` 0) the proposals are generated from the current network, unless a complete
    folder is already there: a run resumed at that point reuses it (it was made from the same
    weights). Mid-round the folder must exist, since the weights it came from are gone.
    Generation leaves the random generators as they were, so that resuming is exact.
    """
    start = proposal_round(epoch, config.proposal_every)
    folder = None if start is None else Path(config.output_dir) / "proposals" / f"epoch_{start}"
    if folder is None or dataset.label_dir == folder:
        dataset.label_dir = folder
        return
    if not proposals_complete(folder):
        if epoch != start or position != 0:
            raise FileNotFoundError(
                f"cannot resume exactly: the proposals of the round that started at epoch "
                f"{start} are missing or incomplete ({folder / MANIFEST} not found); they came "
                f"from the network of that epoch's start"
            )
        rng = get_rng_state()
        write_network_proposals(
            model,
            dataset.dataset,
            folder,
            device,
            method=config.proposal_method,
            crf=config.proposal_crf,
            indices=range(rank, len(dataset), world_size),
            num_workers=config.num_workers,
            progress=config.progress and rank == 0,
            desc=f"proposals for epoch {start}",
        )
        set_rng_state(rng)
        if world_size > 1:
            dist.barrier()
        if rank == 0:
            info = {"epoch": start, "method": config.proposal_method, "images": len(dataset)}
            if config.proposal_method == "crf":
                info["crf"] = config.proposal_crf
            write_manifest(folder, info)
            print(f"epoch {start}: {len(dataset)} proposals written to {folder}", flush=True)
        if world_size > 1:
            dist.barrier()
    dataset.label_dir = folder


def _init_distributed() -> tuple[bool, int, int, int]:
    """``(distributed, rank, world_size, local_rank)`` from torchrun's environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False, 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return True, rank, world_size, local_rank


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator is what user code may use)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; the parameters outside ``model.backbone`` (when the model has
    one) get ``lr * head_lr_mult``."""
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups = [
        {"params": [p for p in model.parameters() if id(p) in backbone_ids], "lr": config.lr},
        {
            "params": [p for p in model.parameters() if id(p) not in backbone_ids],
            "lr": config.lr * config.head_lr_mult,
        },
    ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _tensorboard(config: TrainConfig, main_process: bool):
    if not (config.tensorboard and main_process):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(Path(config.output_dir) / "tensorboard"))


def _log_images(writer: Any, model: nn.Module, dataset: Any, iteration: int, device) -> None:
    """Image, ground truth and prediction of the first validation sample to TensorBoard."""
    from weakseg.engine.predict import colorize

    sample = dataset[0]
    with torch.no_grad():
        logits = model(sample["image"][None].to(device))
    pred = logits.argmax(dim=1)[0].cpu()
    raw = sample["image_raw"]
    raw = raw.expand(3, -1, -1) if raw.shape[0] == 1 else raw[:3]
    writer.add_image("val/image", raw.to(torch.uint8), iteration)
    writer.add_image("val/mask", colorize(sample["mask"]), iteration)
    writer.add_image("val/prediction", colorize(pred), iteration)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train with ``config``; returns the last epoch's record (also in ``metrics.jsonl``).

    Raises:
        TrainingInterrupted: after SIGINT / SIGTERM, once the checkpoint is saved.
        ConfigError, DataError, FileNotFoundError: bad settings or data (named).
    """
    distributed, rank, world_size, local_rank = _init_distributed()
    main_process = rank == 0
    device = _device(config.device, local_rank)
    _seed_everything(config.seed, config.deterministic)
    output_dir = Path(config.output_dir)
    regularizers = build_regularizers(config.losses)

    train_set, val_set, class_names, in_channels = build_datasets(config)
    relabeled = label_folder(train_set) if config.proposal_every is not None else None
    pin = device.type == "cuda"
    loader, sampler, seeded = build_train_loader(train_set, config, rank, world_size, pin)
    val_loader = None
    if val_set is not None:
        val_loader = build_val_loader(
            val_set, config.val_batch_size, config.num_workers, rank, world_size
        )
    model_config = {
        "name": config.model,
        "num_classes": len(class_names),
        "in_channels": in_channels,
        "output_stride": config.output_stride,
    }
    model = build_model(
        config.model,
        len(class_names),
        in_channels=in_channels,
        pretrained=config.pretrained,
        output_stride=config.output_stride,
    )
    if config.crf_layer is not None:  # Table 4: network + trainable CRF-as-RNN layer
        model_config.update(
            crf_layer=dict(config.crf_layer),
            mean=list(config.mean or IMAGENET_MEAN),
            std=list(config.std or IMAGENET_STD),
        )
        model = build_crf_layer_model(
            model, len(class_names), config.crf_layer, model_config["mean"], model_config["std"]
        )
    if distributed and config.sync_bn:
        if device.type != "cuda":
            raise ConfigError(
                "sync_bn: true needs CUDA devices (SyncBatchNorm does not run on CPU)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    model_without_ddp = model
    if distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(model_without_ddp, config)
    steps_per_epoch = len(loader) // config.accumulate
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch has {len(loader)} batches, fewer than accumulate={config.accumulate}"
        )
    total = config.epochs * steps_per_epoch
    if config.max_iterations is not None:
        total = min(total, config.max_iterations)
    lr_scheduler = LambdaLR(
        optimizer,
        poly_lr_lambda(total, config.lr_power, config.warmup_iterations, config.warmup_factor),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    state: dict[str, Any] = {"epoch": 0, "iteration": 0, "best_miou": None, "total": total}

    resume = config.resume
    if resume == "auto":
        resume = str(output_dir / "checkpoint.pth")
        if not Path(resume).is_file():
            resume = None
    if resume:
        checkpoint = load_checkpoint(resume)
        model_without_ddp.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state["iteration"] = int(checkpoint["iteration"])
        state["best_miou"] = checkpoint.get("best_miou")
        if checkpoint.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ConfigError(
                f"cannot resume {resume} exactly: it has {checkpoint['steps_per_epoch']} steps "
                f"per epoch, this config {steps_per_epoch} (dataset or batch size changed)"
            )
        rng = checkpoint.get("rng", {})
        if str(rank) in rng:
            set_rng_state(rng[str(rank)])

    def checkpoint_dict() -> dict[str, Any]:
        return {
            "model": model_without_ddp.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": state["epoch"],
            "iteration": state["iteration"],
            "steps_per_epoch": steps_per_epoch,
            "best_miou": state["best_miou"],
            "args": config.to_dict(),
            "model_config": model_config,
            "class_names": class_names,
            "rng": rng_states(),
            "version": __version__,
        }

    def rng_states() -> dict[str, Any]:
        own = get_rng_state()
        if not distributed:
            return {"0": own}
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, own)
        return {str(r): s for r, s in enumerate(gathered)}

    def save(name: str = "checkpoint.pth") -> Path:
        content = checkpoint_dict()  # collective when distributed: every rank calls it
        path = output_dir / name
        if main_process:
            save_checkpoint(content, path)
        return path

    writer = _tensorboard(config, main_process)
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    context = {"main": main_process, "distributed": distributed, "writer": writer, "save": save}
    record: dict[str, Any] = {}
    try:
        with _StopFlag() as stop:
            context["stop"] = stop
            while state["iteration"] < total:
                epoch, position = divmod(state["iteration"], steps_per_epoch)
                state["epoch"] = epoch
                if relabeled is not None:
                    _use_proposals(
                        epoch,
                        position,
                        relabeled,
                        model_without_ddp,
                        config,
                        device,
                        rank,
                        world_size,
                    )
                sampler.set_epoch(epoch, start=position * config.accumulate * config.batch_size)
                seeded.set_epoch(epoch)
                steps = min(steps_per_epoch - position, total - state["iteration"])
                start = time.perf_counter()
                losses = train_one_epoch(
                    model,
                    regularizers,
                    optimizer,
                    lr_scheduler,
                    scaler,
                    loader,
                    steps,
                    state,
                    config,
                    device,
                    context,
                )
                if "stopped" in state:
                    path = save()
                    raise TrainingInterrupted(state["stopped"], path if main_process else None)
                epoch_done = state["iteration"] % steps_per_epoch == 0
                finished = state["iteration"] >= total
                record = {
                    "epoch": epoch,
                    "iteration": state["iteration"],
                    "lr": optimizer.param_groups[0]["lr"],
                    "train": losses,
                    "time": time.perf_counter() - start,
                }
                if val_loader is not None and (
                    finished or (epoch_done and (epoch + 1) % config.eval_every == 0)
                ):
                    confusion = evaluate(model_without_ddp, val_loader, len(class_names), device)
                    record["val"] = confusion.summary(class_names)
                    miou = record["val"]["miou"]
                    if writer is not None:
                        writer.add_scalar("val/miou", miou or 0.0, state["iteration"])
                        dice = record["val"]["mean_dice"]
                        writer.add_scalar("val/mean_dice", dice or 0.0, state["iteration"])
                        _log_images(writer, model_without_ddp, val_set, state["iteration"], device)
                    best = state["best_miou"]
                    if miou is not None and (best is None or miou > best):
                        state["best_miou"] = miou
                        save("best.pth")
                if main_process:
                    with open(output_dir / "metrics.jsonl", "a") as stream:
                        stream.write(json.dumps(record) + "\n")
                    _print_record(record)
                save()
    finally:
        if writer is not None:
            writer.close()
    return record


def _print_record(record: dict[str, Any]) -> None:
    losses = " ".join(f"{k}={v:.4g}" for k, v in record["train"].items())
    line = f"epoch {record['epoch']} iter {record['iteration']} lr={record['lr']:.3g} {losses}"
    if "val" in record:
        val = record["val"]
        line += f" | val mIoU={_fmt(val['miou'])} mDice={_fmt(val['mean_dice'])}"
    print(line, flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The arguments of ``weakseg train`` (also ``python -m weakseg.engine.train``)."""
    parser = argparse.ArgumentParser(
        description="Train a segmentation network from scribbles with regularized losses.",
        add_help=add_help,
    )
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable); VALUE is YAML, dotted keys reach into losses",
    )
    parser.add_argument("--resume", default=None, help="checkpoint to resume, or 'auto'")
    parser.add_argument(
        "--print-config", action="store_true", help="print the merged config and exit"
    )
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``weakseg train``; returns the exit status (128 + signal number when interrupted)."""
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"resume={args.resume}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    try:
        train(config)
    except TrainingInterrupted as exc:
        if exc.checkpoint is not None:
            message = f"interrupted by signal {exc.signum}; checkpoint saved to {exc.checkpoint}"
            print(message, file=sys.stderr)
        return 128 + exc.signum
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
