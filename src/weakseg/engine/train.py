"""The training recipe, in the style of torchvision's ``references/segmentation``:
``train(config)`` = :func:`build` -> :func:`resume` -> :func:`fit`.

:func:`build` makes a :class:`Run` (model, objective, optimizer, schedule, loaders, state) from a
:class:`~weakseg.engine.config.TrainConfig`; :func:`resume` loads a checkpoint into it;
:func:`fit` runs the optimizer steps and calls its :class:`Hook` objects at fixed points
(``on_fit_start``, ``on_epoch_start``, ``on_iteration``, ``on_epoch_end``, ``on_checkpoint``,
``on_interrupt``, ``on_fit_end``). What a run writes and when (the progress bar,
``losses.jsonl``, TensorBoard, validation with ``best.pth``, ``metrics.jsonl``, checkpoints,
iterative proposals) are the hooks of :func:`default_hooks`; the demo passes its own.

Loss = partial cross-entropy on the labeled pixels + the weighted regularizers of
``config.losses`` (a :class:`~weakseg.losses.Objective`) on the softmax of the logits
upsampled to the input size (each term logged separately). SGD or AdamW, poly LR with linear
warm-up, mixed precision (float16 on CUDA, bfloat16 on the CPU with ``amp_cpu``), gradient
accumulation, DistributedDataParallel under ``torchrun`` (the same command runs
single-process). With ``slab_slices: S > 1`` a sample is a slab of ``S`` adjacent slices
(:mod:`weakseg.data.slabs`): the network sees the slices, the objective each slab as a volume
(:func:`slab_volumes`), so the regularizers work in 3D.

The training modes of Table 2 of the paper (see :mod:`weakseg.engine.config`):

- DenseCRF-GD, ``losses: {dense_crf: ...}``: pCE + weighted dense CRF loss by back-propagation.
- DenseCRF-ADM, ``losses: {densecrf_adm: ...}``: per batch, mean-field proposals X with the
  scribbles clamped; the loss pCE + CE(X, S) on the unlabeled pixels replaces pCE
  (:class:`~weakseg.losses.DenseCRFADMLoss`).
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
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from weakseg import __version__
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from weakseg.engine.config import ConfigError, TrainConfig, load_config
from weakseg.engine.device import resolve_device
from weakseg.engine.evaluate import evaluate
from weakseg.engine.loaders import (
    build_datasets,
    build_train_loader,
    build_val_loader,
    label_folder,
)
from weakseg.engine.preflight import check_labels
from weakseg.engine.run_dir import (
    RunDirLock,
    check_new_run,
    check_resume_settings,
    truncate_log,
)
from weakseg.engine.weight_average import WeightAverage
from weakseg.errors import MissingFileError
from weakseg.losses import Objective
from weakseg.models import build_crf_layer_model, build_model
from weakseg.proposals import (
    proposal_round,
    proposals_complete,
    write_manifest,
    write_network_proposals,
)
from weakseg.proposals.iterative import MANIFEST

__all__ = [
    "Checkpointing",
    "Hook",
    "Run",
    "TrainingInterrupted",
    "Validation",
    "build",
    "compute_loss",
    "default_hooks",
    "fit",
    "main",
    "poly_lr_lambda",
    "resume",
    "save",
    "slab_volumes",
    "train",
    "train_step",
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
    logits: Tensor, batch: Mapping[str, Any], objective: Objective | Mapping[str, nn.Module]
) -> tuple[Tensor, dict[str, float]]:
    """The objective's total loss and its logged terms as floats (one host transfer).

    Args:
        logits: Tensor[B, K, h, w] network output (any resolution); for a batch of slabs
            (``image_raw [B, S, C, H, W]``), Tensor[B*S, K, h, w], the slices as one batch,
            slab after slab (:func:`slab_volumes` makes volumes of them for the objective).
        batch: ``label``, ``image_raw``, ``valid_mask`` (and ``tags`` for SEC), on the logits'
            device.
        objective: an :class:`~weakseg.losses.Objective`, or the mapping name -> loss module
            to build one from.

    Returns:
        The total Tensor[] and the terms of :class:`~weakseg.losses.Objective` as floats.
    """
    if not isinstance(objective, Objective):
        objective = Objective(objective)
    if logits.ndim == 4 and batch["image_raw"].ndim == 5:
        logits, batch = slab_volumes(logits, batch)
    total, terms = objective(logits, batch)
    return total, _floats(terms)


def slab_volumes(logits: Tensor, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """A batch of ``B`` slabs of ``S`` slices as the objective's volumes: partial cross-entropy
    on every labeled pixel of the slabs, the regularizers in 3D over each slab.

    Args:
        logits: Tensor[B*S, K, h, w], the network's output for ``batch["image"].flatten(0, 1)``.
        batch: a collated slab batch: ``image_raw [B, S, C, H, W]``, ``label`` and
            ``valid_mask [B, S, H, W]``, ``tags [B, S, K]`` (optional).

    Returns:
        ``logits [B, K, S, h, w]`` and the batch with ``image_raw [B, C, S, H, W]`` and
        ``tags [B, K]`` (the classes of any slice); the other keys as they are.
    """
    batch_size, slices = batch["label"].shape[:2]
    volumes = dict(batch)
    volumes["image_raw"] = batch["image_raw"].transpose(1, 2)
    if "tags" in batch:
        volumes["tags"] = batch["tags"].any(dim=1)
    return logits.unflatten(0, (batch_size, slices)).transpose(1, 2), volumes


def _floats(terms: Mapping[str, Tensor]) -> dict[str, float]:
    """Scalars to floats with one device-to-host copy (float32 -> float64 is exact)."""
    stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for v in terms.values()])
    return dict(zip(terms, stacked.tolist(), strict=True))


def _autocast(config: TrainConfig, device: torch.device) -> torch.autocast:
    """The mixed precision of the network's forward pass: float16 on CUDA (``amp``), bfloat16
    on the CPU (``amp_cpu``), disabled otherwise."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16, enabled=config.amp)
    enabled = config.amp_cpu and device.type == "cpu"
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def train_step(
    model: nn.Module,
    batches: list[dict[str, Any]],
    objective: Objective | Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One optimizer step over ``len(batches)`` accumulated batches; returns the mean terms.

    A batch of slabs (``image [B, S, C, H, W]``, ``slab_slices > 1``) goes through the network
    as ``B * S`` slices and through the objective as ``B`` volumes (:func:`compute_loss`).
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    autocast = _autocast(config, device)
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
            with autocast:
                if config.crf_layer is not None:  # the CRF layer filters the 0-255 image
                    logits = model(batch["image"], batch["image_raw"])
                elif batch["image"].ndim == 5:  # slabs: the 2D network sees their slices
                    logits = model(batch["image"].flatten(0, 1))
                else:
                    logits = model(batch["image"])
            logits = logits.float()  # the losses in float32 (a no-op without autocast)
            loss, terms = compute_loss(logits, batch, objective)
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


@dataclasses.dataclass
class Processes:
    """This process's place under torchrun (one process, rank 0, without it)."""

    distributed: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Processes:
        """From torchrun's environment; initializes the process group when distributed."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(True, rank, world_size, local_rank)


@dataclasses.dataclass
class Run:
    """Everything a training run is made of; :func:`build` fills it, :func:`fit` runs it.

    ``state`` holds what changes and is checkpointed: ``epoch``, ``iteration``, ``best_miou``
    (and, during :func:`fit`, ``stopped`` = a signal number). Hooks keep their own objects in
    ``extras``.
    """

    config: TrainConfig
    processes: Processes
    device: torch.device
    model: nn.Module  # the DDP wrapper when distributed
    model_without_ddp: nn.Module
    model_config: dict[str, Any]
    class_names: list[str]
    objective: Objective
    optimizer: torch.optim.Optimizer
    lr_scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    train_set: Any
    loader: torch.utils.data.DataLoader
    sampler: Any
    seeded: Any
    val_set: Any
    val_loader: torch.utils.data.DataLoader | None
    steps_per_epoch: int
    total: int
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    hooks: list[Hook] = dataclasses.field(default_factory=list)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def main(self) -> bool:
        return self.processes.main

    @property
    def weight_average(self) -> WeightAverage | None:
        """The moving average of the weights (``ema_decay``), or ``None``."""
        return self.extras.get("weight_average")

    @property
    def result_model(self) -> nn.Module:
        """The network that training yields: the weight average when ``ema_decay`` is set,
        else the trained network. Validation measures it; checkpoints store it as ``model``."""
        average = self.weight_average
        return self.model_without_ddp if average is None else average.module


class Hook:
    """Called by :func:`fit` at fixed points; override what you need (all no-ops here).

    Order of calls: ``on_fit_start`` once; per epoch ``on_epoch_start(epoch, position,
    steps)``, ``on_iteration(terms)`` after every optimizer step, ``on_epoch_end(record)``
    (hooks may add to ``record`` before the later ones see it); ``on_checkpoint(content)``
    whenever a checkpoint is written (to add to it); ``on_interrupt`` after a stop signal
    (return the checkpoint written, if any); ``on_fit_end`` always, last.
    """

    def on_fit_start(self, run: Run) -> None: ...

    def on_epoch_start(self, run: Run, epoch: int, position: int, steps: int) -> None: ...

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None: ...

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, run: Run, content: dict[str, Any]) -> None: ...

    def on_interrupt(self, run: Run) -> Path | None:
        return None

    def on_fit_end(self, run: Run) -> None: ...


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


def build_network(
    config: TrainConfig, num_classes: int, in_channels: int, *, load_pretrained: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The network of ``config`` (wrapped in the CRF-as-RNN layer with ``crf_layer``) and the
    ``model_config`` that ``weakseg eval`` / ``predict`` rebuild it from.

    ``load_pretrained=False`` leaves out ``config.pretrained``: a run that resumes takes every
    weight from its checkpoint, so the pretrained file is not read (it may be gone by then)."""
    model_config: dict[str, Any] = {
        "name": config.model,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "output_stride": config.output_stride,
    }
    if config.model_options:  # read back by load_trained_model
        model_config["options"] = dict(config.model_options)
    model = build_model(
        config.model,
        num_classes,
        in_channels=in_channels,
        pretrained=config.pretrained if load_pretrained else None,
        output_stride=config.output_stride,
        options=config.model_options,
    )
    if config.crf_layer is not None:  # Table 4: network + trainable CRF-as-RNN layer
        mean, std = list(config.mean or IMAGENET_MEAN), list(config.std or IMAGENET_STD)
        model_config.update(crf_layer=dict(config.crf_layer), mean=mean, std=std)
        model = build_crf_layer_model(model, num_classes, config.crf_layer, mean, std)
    return model, model_config


def _place(model: nn.Module, config: TrainConfig, processes: Processes, device) -> nn.Module:
    """``model`` on ``device``; SyncBatchNorm and DistributedDataParallel when distributed."""
    if processes.distributed and config.sync_bn:
        if device.type != "cuda":
            raise ConfigError(
                "sync_bn: true needs CUDA devices (SyncBatchNorm does not run on CPU)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if processes.distributed:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def build(config: TrainConfig, datasets: tuple[Any, Any, list[str], int] | None = None) -> Run:
    """A :class:`Run` of ``config``, ready for :func:`fit` (seeded; nothing written yet).

    Args:
        config: the settings.
        datasets: ``(train_set, val_set, class_names, in_channels)`` as from
            :func:`~weakseg.engine.loaders.build_datasets`, to share data between runs
            (the demo); built from ``config`` when omitted.

    Raises:
        ConfigError, DataError: bad settings or data (named; a missing file is a
            :class:`~weakseg.errors.MissingFileError`, also a ``FileNotFoundError``).
    """
    processes = Processes.from_environment()
    device = resolve_device(config.device, processes.local_rank, option="device")
    if config.threads is not None:  # the numba lattice follows torch's count
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed, config.deterministic)
    objective = config.objective()
    train_set, val_set, class_names, in_channels = datasets or build_datasets(config)
    rank, world = processes.rank, processes.world_size
    loader, sampler, seeded = build_train_loader(
        train_set, config, rank, world, device.type == "cuda"
    )
    val_loader = None
    if val_set is not None:
        val_loader = build_val_loader(
            val_set, config.val_batch_size, config.num_workers, rank, world
        )
    resuming = resume_path(config) is not None
    network, model_config = build_network(
        config, len(class_names), in_channels, load_pretrained=not resuming
    )
    model = _place(network, config, processes, device)
    optimizer = build_optimizer(network, config)
    steps_per_epoch = len(loader) // config.accumulate
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch has {len(loader)} batches, fewer than accumulate={config.accumulate}"
        )
    total = config.epochs * steps_per_epoch
    if config.max_iterations is not None:
        total = min(total, config.max_iterations)
    schedule = poly_lr_lambda(
        total, config.lr_power, config.warmup_iterations, config.warmup_factor
    )
    extras: dict[str, Any] = {}
    if config.ema_decay is not None:
        extras["weight_average"] = WeightAverage(network, config.ema_decay)
    return Run(
        config=config,
        processes=processes,
        device=device,
        model=model,
        model_without_ddp=network,
        model_config=model_config,
        class_names=list(class_names),
        objective=objective,
        optimizer=optimizer,
        lr_scheduler=LambdaLR(optimizer, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda"),
        train_set=train_set,
        loader=loader,
        sampler=sampler,
        seeded=seeded,
        val_set=val_set,
        val_loader=val_loader,
        steps_per_epoch=steps_per_epoch,
        total=total,
        state={"epoch": 0, "iteration": 0, "best_miou": None, "total": total},
        extras=extras,
    )


def resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint ``config.resume`` names: a path, or for ``"auto"`` the run folder's
    ``checkpoint.pth`` when it exists; ``None`` for a fresh run."""
    if config.resume == "auto":
        path = Path(config.output_dir) / "checkpoint.pth"
        return path if path.is_file() else None
    return Path(config.resume) if config.resume else None


def resume(run: Run, path: str | Path | None = None) -> dict[str, Any] | None:
    """Load the checkpoint ``path`` (default: :func:`resume_path`) into ``run``: weights,
    optimizer, schedule, AMP scaler, position and this process's RNG states. Returns the
    checkpoint, or ``None`` when there is nothing to resume.

    Raises:
        ConfigError: the checkpoint's epochs have another number of steps, or a setting differs
            from the checkpoint's that a resume would not apply (e.g. ``lr``: the optimizer and
            schedule come from the checkpoint), naming the key and both values.
    """
    path = resume_path(run.config) if path is None else Path(path)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    check_resume_settings(
        checkpoint.get("args"), run.config.to_dict(), TrainConfig().to_dict(), path
    )
    run.model_without_ddp.load_state_dict(checkpoint.get("trained_model", checkpoint["model"]))
    if run.weight_average is not None:
        if "trained_model" not in checkpoint:
            raise ConfigError(f"cannot resume {path} with ema_decay: it holds no weight average")
        run.weight_average.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.state["iteration"] = int(checkpoint["iteration"])
    run.state["best_miou"] = checkpoint.get("best_miou")
    if checkpoint.get("steps_per_epoch", run.steps_per_epoch) != run.steps_per_epoch:
        raise ConfigError(
            f"cannot resume {path} exactly: it has {checkpoint['steps_per_epoch']} steps "
            f"per epoch, this config {run.steps_per_epoch} (dataset or batch size changed)"
        )
    rng = checkpoint.get("rng", {})
    if str(run.processes.rank) in rng:
        set_rng_state(rng[str(run.processes.rank)])
    return checkpoint


def _rng_states(run: Run) -> dict[str, Any]:
    own = get_rng_state()
    if not run.processes.distributed:
        return {"0": own}
    gathered: list[Any] = [None] * run.processes.world_size
    dist.all_gather_object(gathered, own)
    return {str(r): s for r, s in enumerate(gathered)}


def checkpoint_content(run: Run) -> dict[str, Any]:
    """What a checkpoint holds (collective when distributed: every rank calls it).

    ``model`` is :attr:`Run.result_model`'s weights (what ``eval`` and ``predict`` load); with
    ``ema_decay`` the trained weights, from which a resumed run goes on, are ``trained_model``.
    """
    content = {
        "model": run.result_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "lr_scheduler": run.lr_scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": run.state["epoch"],
        "iteration": run.state["iteration"],
        "steps_per_epoch": run.steps_per_epoch,
        "best_miou": run.state["best_miou"],
        "args": run.config.to_dict(),
        "model_config": run.model_config,
        "class_names": run.class_names,
        "rng": _rng_states(run),
        "version": __version__,
    }
    if run.weight_average is not None:
        content["trained_model"] = run.model_without_ddp.state_dict()
    for hook in run.hooks:
        hook.on_checkpoint(run, content)
    return content


def save(run: Run, name: str = "checkpoint.pth") -> Path:
    """Write ``output_dir/name`` (the main process writes; every rank must call it)."""
    content = checkpoint_content(run)
    path = run.output_dir / name
    if run.main:
        save_checkpoint(content, path)
    return path


def _grouped(loader: Iterator, size: int, steps: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(loader)
    for _ in range(steps):
        yield [next(iterator) for _ in range(size)]


def _fit_epoch(run: Run, steps: int, stop: _StopFlag) -> dict[str, float]:
    """``steps`` optimizer steps; the mean of each loss term (over all processes)."""
    run.model.train()
    config, state = run.config, run.state
    totals: dict[str, float] = {}
    done = 0
    for batches in _grouped(run.loader, config.accumulate, steps):
        terms = train_step(
            run.model, batches, run.objective, run.optimizer, run.scaler, config, run.device
        )
        run.lr_scheduler.step()
        state["iteration"] += 1
        if run.weight_average is not None:
            run.weight_average.update(run.model_without_ddp, state["iteration"])
        done += 1
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value
        signum = stop.requested(run.processes.distributed, run.device)
        if signum is not None:
            state["stopped"] = signum
        for hook in run.hooks:
            hook.on_iteration(run, terms)
        if signum is not None or state["iteration"] >= run.total:
            break
    means = {k: v / max(done, 1) for k, v in totals.items()}
    if run.processes.distributed:
        keys = sorted(means)
        values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=run.device)
        dist.all_reduce(values)
        means = dict(zip(keys, (values / dist.get_world_size()).tolist(), strict=True))
    return means


def fit(run: Run, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train ``run`` from its ``state["iteration"]`` to ``run.total``, calling ``hooks``.

    Returns:
        The last epoch's record: ``epoch``, ``iteration``, ``lr``, ``train`` (mean terms),
        ``time`` and whatever the hooks added (``val``).

    Raises:
        TrainingInterrupted: after SIGINT / SIGTERM, once the hooks' ``on_interrupt`` ran.
    """
    run.hooks = list(hooks)
    state = run.state
    record: dict[str, Any] = {}
    try:
        for hook in run.hooks:
            hook.on_fit_start(run)
        with _StopFlag() as stop:
            while state["iteration"] < run.total:
                epoch, position = divmod(state["iteration"], run.steps_per_epoch)
                state["epoch"] = epoch
                steps = min(run.steps_per_epoch - position, run.total - state["iteration"])
                for hook in run.hooks:
                    hook.on_epoch_start(run, epoch, position, steps)
                start_sample = position * run.config.accumulate * run.config.batch_size
                run.sampler.set_epoch(epoch, start=start_sample)
                run.seeded.set_epoch(epoch)
                start = time.perf_counter()
                losses = _fit_epoch(run, steps, stop)
                if "stopped" in state:
                    paths = [hook.on_interrupt(run) for hook in run.hooks]
                    path = next((p for p in paths if p is not None), None)
                    raise TrainingInterrupted(state["stopped"], path if run.main else None)
                record = {
                    "epoch": epoch,
                    "iteration": state["iteration"],
                    "lr": run.optimizer.param_groups[0]["lr"],
                    "train": losses,
                    "time": time.perf_counter() - start,
                }
                for hook in run.hooks:
                    hook.on_epoch_end(run, record)
    finally:
        for hook in run.hooks:
            hook.on_fit_end(run)
    return record


class ProgressBar(Hook):
    """A tqdm bar per epoch with the step's terms (main process, ``progress: true``)."""

    def on_epoch_start(self, run: Run, epoch: int, position: int, steps: int) -> None:
        run.extras["bar"] = tqdm(
            total=steps,
            desc=f"epoch {epoch}",
            disable=not (run.config.progress and run.main),
            dynamic_ncols=True,
            leave=False,
        )

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        bar = run.extras["bar"]
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        self.on_fit_end(run)

    def on_fit_end(self, run: Run) -> None:
        bar = run.extras.pop("bar", None)
        if bar is not None:
            bar.close()


class LossLog(Hook):
    """One JSON line every ``log_every`` steps in ``losses.jsonl`` (main process):
    ``{"iteration", "epoch", "lr", <each term>: value}``; appended to on resume."""

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        iteration = run.state["iteration"]
        if not run.main or iteration % run.config.log_every != 0:
            return
        lr = run.optimizer.param_groups[0]["lr"]
        line = {"iteration": iteration, "epoch": run.state["epoch"], "lr": lr, **terms}
        # opened per line: flushed and closed at once
        with open(run.output_dir / "losses.jsonl", "a") as stream:
            stream.write(json.dumps(line) + "\n")


class TensorBoard(Hook):
    """Train terms every ``log_every`` steps, validation scores and images after validation,
    when the ``tensorboard`` package is installed (main process, ``tensorboard: true``)."""

    def on_fit_start(self, run: Run) -> None:
        self.writer = None
        if not (run.config.tensorboard and run.main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        # a resumed run drops the events logged after its checkpoint, as the JSON logs do
        purge = run.state["iteration"] + 1 if run.state["iteration"] else None
        self.writer = SummaryWriter(log_dir=str(run.output_dir / "tensorboard"), purge_step=purge)

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        iteration = run.state["iteration"]
        if self.writer is None or iteration % run.config.log_every != 0:
            return
        for key, value in terms.items():
            self.writer.add_scalar(f"train/{key}", value, iteration)
        self.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], iteration)

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if self.writer is None or "val" not in record:
            return
        iteration = run.state["iteration"]
        self.writer.add_scalar("val/miou", record["val"]["miou"] or 0.0, iteration)
        self.writer.add_scalar("val/mean_dice", record["val"]["mean_dice"] or 0.0, iteration)
        _log_images(self.writer, run.result_model, run.val_set, iteration, run.device)

    def on_fit_end(self, run: Run) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None


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


class Validation(Hook):
    """Evaluate after every ``eval_every``-th epoch and at the end; ``record["val"]`` is the
    summary; a better ``metric`` than ``state["best_miou"]`` writes ``best.pth``.

    Subclasses change what is measured by overriding :meth:`evaluate` (and ``metric``).
    """

    metric = "miou"

    def due(self, run: Run) -> bool:
        """At the end of the run, or of an epoch that validation falls on."""
        iteration, config = run.state["iteration"], run.config
        if run.val_loader is None:
            return False
        if iteration >= run.total:
            return True
        epoch_done = iteration % run.steps_per_epoch == 0
        return epoch_done and (run.state["epoch"] + 1) % config.eval_every == 0

    def evaluate(self, run: Run) -> dict[str, Any]:
        """The validation summary of the current weights: per slice (mIoU, Dice, per class)
        and per volume (3D Dice, HD95; slices grouped by ``volume_pattern``)."""
        num_classes = len(run.class_names)
        result = evaluate(
            run.result_model,
            run.val_loader,
            num_classes,
            run.device,
            volume_pattern=run.config.volume_pattern,
        )
        return result.summary(run.class_names)

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if not self.due(run):
            return
        record["val"] = self.evaluate(run)
        metric = run.config.best_metric if type(self) is Validation else self.metric
        score, best = record["val"][metric], run.state["best_miou"]
        if score is not None and (best is None or score > best):
            run.state["best_miou"] = score
            save(run, "best.pth")


def rampup_factor(iteration: int, iterations: int) -> float:
    """The sigmoid-shaped ramp-up of the medical scribble literature (Laine & Aila 2017, used
    by WSL4MIS): ``exp(-5 (1 - t)^2)`` with ``t = min(iteration / iterations, 1)``; 1 when
    ``iterations`` is 0."""
    if iterations <= 0:
        return 1.0
    t = min(max(iteration / iterations, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class RegularizerRampUp(Hook):
    """Scale the weight of every regularizer that adds to partial cross-entropy by
    :func:`rampup_factor` of the iteration, before every step (resumed runs included). Terms
    with ``LossTerm.regularizer`` false (supervised ones such as Dice, and those that replace
    pCE) keep theirs."""

    def __init__(self, run: Run) -> None:
        from weakseg.losses import LOSS_TERMS

        self.base = {
            name: float(module.weight)
            for name, module in run.objective.terms.items()
            if LOSS_TERMS[name].regularizer and hasattr(module, "weight")
        }

    def _apply(self, run: Run) -> None:
        factor = rampup_factor(run.state["iteration"], run.config.rampup_iterations)
        for name, weight in self.base.items():
            run.objective[name].weight = weight * factor

    def on_fit_start(self, run: Run) -> None:
        self._apply(run)

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        self._apply(run)

    def on_fit_end(self, run: Run) -> None:  # the objective (cached by the config) restored
        for name, weight in self.base.items():
            run.objective[name].weight = weight


class EpochLog(Hook):
    """The epoch's record as a JSON line of ``metrics.jsonl`` and one printed line."""

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if not run.main:
            return
        with open(run.output_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        _print_record(record)


class Checkpointing(Hook):
    """``checkpoint.pth`` every ``checkpoint_every`` steps, after each epoch and on a stop
    signal."""

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        iteration = run.state["iteration"]
        if "stopped" in run.state or iteration >= run.total:
            return
        if iteration % run.config.checkpoint_every == 0:
            save(run)

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        save(run)

    def on_interrupt(self, run: Run) -> Path | None:
        return save(run)


class IterativeProposals(Hook):
    """ScribbleSup-style rounds (``proposal_every``): at the start of every epoch, point the
    training labels (a :class:`~weakseg.data.LabelFolderDataset`) at the round's folder.

    The first round uses the scribbles. At the start of a later round (its first epoch, at
    ``position`` 0) the proposals are generated from the current network, unless a complete
    folder is already there: a run resumed at that point reuses it (it was made from the same
    weights). Mid-round the folder must exist, since the weights it came from are gone.
    Generation leaves the random generators as they were, so that resuming is exact.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_start(self, run: Run, epoch: int, position: int, steps: int) -> None:
        config, dataset = run.config, self.dataset
        start = proposal_round(epoch, config.proposal_every)
        folder = None if start is None else run.output_dir / "proposals" / f"epoch_{start}"
        if folder is not None and dataset.label_dir != folder and not proposals_complete(folder):
            if epoch != start or position != 0:
                raise MissingFileError(
                    f"cannot resume exactly: the proposals of the round that started at epoch "
                    f"{start} are missing or incomplete ({folder / MANIFEST} not found); they "
                    f"came from the network of that epoch's start",
                    hint="restore that folder, or start the run again with --overwrite",
                )
            self._generate(run, start, folder)
        dataset.label_dir = folder

    def _generate(self, run: Run, start: int, folder: Path) -> None:
        config, dataset, processes = run.config, self.dataset, run.processes
        rng = get_rng_state()
        write_network_proposals(
            run.result_model,
            dataset.dataset,
            folder,
            run.device,
            method=config.proposal_method,
            crf=config.proposal_crf,
            indices=range(processes.rank, len(dataset), processes.world_size),
            num_workers=config.num_workers,
            progress=config.progress and run.main,
            desc=f"proposals for epoch {start}",
        )
        set_rng_state(rng)
        if processes.distributed:
            dist.barrier()
        if run.main:
            info = {"epoch": start, "method": config.proposal_method, "images": len(dataset)}
            if config.proposal_method == "crf":
                info["crf"] = config.proposal_crf
            write_manifest(folder, info)
            print(f"epoch {start}: {len(dataset)} proposals written to {folder}", flush=True)
        if processes.distributed:
            dist.barrier()


def default_hooks(run: Run) -> list[Hook]:
    """What ``weakseg train`` does around the steps, in calling order."""
    hooks: list[Hook] = []
    if run.config.proposal_every is not None:
        relabeled = label_folder(run.train_set)
        if relabeled is None:
            raise ConfigError("proposal_every needs a training set whose labels come from a folder")
        hooks.append(IterativeProposals(relabeled))
    if run.config.rampup_iterations > 0:
        hooks.append(RegularizerRampUp(run))
    hooks += [ProgressBar(), LossLog(), Validation(), TensorBoard(), EpochLog(), Checkpointing()]
    return hooks


def prepare_output_dir(run: Run) -> None:
    """Create ``output_dir``, cut ``losses.jsonl`` / ``metrics.jsonl`` back to the run's
    iteration (a resumed run logs again from its checkpoint on: the rows written after it, by
    a run killed since, would appear twice) and write ``config.yaml`` (main process)."""
    if run.main:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        for name in ("losses.jsonl", "metrics.jsonl"):
            truncate_log(run.output_dir / name, run.state["iteration"])
        text = yaml.safe_dump(run.config.to_dict(), sort_keys=False)
        (run.output_dir / "config.yaml").write_text(text)


def train(config: TrainConfig, *, overwrite: bool = False) -> dict[str, Any]:
    """Train with ``config``: :func:`build`, :func:`resume`, :func:`fit` with
    :func:`default_hooks`; returns the last epoch's record (also in ``metrics.jsonl``).

    The run folder belongs to this run while it trains (:class:`RunDirLock`: a second trainer
    there fails at once). A fresh run (no ``resume``) into a folder that holds an earlier run is
    refused unless ``overwrite``, which removes the earlier run's files first. The label files
    of the splits in use are checked before the first iteration.

    Raises:
        TrainingInterrupted: after SIGINT / SIGTERM, once the checkpoint is saved.
        RunDirError: another trainer holds the run folder, it holds an earlier run, or it
            cannot be written.
        ConfigError, DataError, FileNotFoundError: bad settings or data (named).
    """
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 owns the folder
    lock = RunDirLock(config.output_dir) if main_process else contextlib.nullcontext()
    with lock:
        if main_process:
            resuming = config.resume is not None  # "auto" continues whatever the folder holds
            removed = check_new_run(config.output_dir, resume=resuming, overwrite=overwrite)
            if removed:
                print(
                    f"--overwrite: removed {', '.join(removed)} of the earlier run in "
                    f"{config.output_dir}",
                    file=sys.stderr,
                )
        run = build(config)
        check_labels(config, len(run.class_names), run.output_dir if run.main else None)
        resume(run)
        hooks = default_hooks(run)
        prepare_output_dir(run)
        return fit(run, hooks)


def _print_record(record: dict[str, Any]) -> None:
    losses = " ".join(f"{k}={v:.4g}" for k, v in record["train"].items())
    line = f"epoch {record['epoch']} iter {record['iteration']} lr={record['lr']:.3g} {losses}"
    if "val" in record:
        val = record["val"]
        line += f" | val mIoU={_fmt(val['miou'])} mDice={_fmt(val['mean_dice'])}"
    print(line, flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(args: argparse.Namespace) -> int:
    """Run ``weakseg train`` (arguments of :mod:`weakseg.cli.train`); returns the exit status
    (128 + signal number when interrupted)."""
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"resume={args.resume}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    try:
        train(config, overwrite=getattr(args, "overwrite", False))
    except TrainingInterrupted as exc:
        if exc.checkpoint is not None:
            message = f"interrupted by signal {exc.signum}; checkpoint saved to {exc.checkpoint}"
            print(message, file=sys.stderr)
        return 128 + exc.signum
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
