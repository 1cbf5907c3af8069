"""Training configuration as data: :class:`TrainConfig`, filled from YAML then ``--set key=value``.

The settings are grouped in sections (:class:`DataSettings`, :class:`ModelSettings`,
:class:`ObjectiveSettings`, :class:`OptimizerSettings`, :class:`RunSettings`), each a dataclass
that checks its own values; :class:`TrainConfig` is all of them, with the flat keys of the YAML
format (``lr``, not ``optimizer.lr``). Typed conversion of the plain YAML values lives in
:mod:`weakseg.engine.coercion`; the loss modules are built and validated by the registry of
:mod:`weakseg.losses.objective`, the CRF settings by constructing the CRF they configure.

A YAML file (read with ``yaml.safe_load``) sets any of the :class:`TrainConfig` fields; the
command line overrides them with ``--set key=value`` (the value is parsed as YAML, so
``--set lr=0.01``, ``--set scale_range=[0.5,1.5]``, ``--set losses={}`` work; dotted keys reach
into the ``losses`` mapping: ``--set losses.dense_crf.weight=1e-9``). Unknown keys, values of the
wrong type and unknown loss parameters are :class:`ConfigError` naming the key.

``losses`` maps a loss name (:data:`weakseg.losses.LOSS_TERMS`) to the keyword arguments of its
module (``weight`` and the loss's hyper-parameters), e.g.::

    losses:
      dense_crf: {weight: 2.0e-9, sigma_rgb: 15, sigma_xy: 100, scale_factor: 0.5,
                  normalization: rloss}

The training loss is partial cross-entropy on the labeled pixels plus the sum of these terms.

The training modes of Table 2 of the paper:

- DenseCRF-GD (the paper's method): ``losses: {dense_crf: {...}}``.
- DenseCRF-ADM (online proposals, Sec. 3): ``losses: {densecrf_adm: {...}}`` with the keyword
  arguments of :class:`~weakseg.losses.DenseCRFADMLoss` (mean-field CRF settings, and
  ``sigma_rgb`` / ``sigma_xy`` of the reported dense CRF loss). It *replaces* partial
  cross-entropy, which it contains; it cannot be combined with
  ``dense_crf``.
- GrabCut (one time): ``supervision: full`` with ``label_dir: DIR``, a folder of full masks
  ``DIR/<id>.png`` written by ``weakseg proposals grabcut``; they replace the dataset's labels.
- ScribbleSup-style iterative proposals: ``proposal_every: N``; the first ``N`` epochs train on
  the scribbles (pCE), then at the start of every N-th epoch the network's predictions on the
  training images, refined with the scribbles clamped (``proposal_method: crf`` = mean field with
  the :func:`~weakseg.crf.dense_crf_inference` arguments of ``proposal_crf``, or ``grabcut``),
  become the full-mask labels (``output_dir/proposals/epoch_<N>/``).

Table 3 (image tags): ``losses: {sec: {...}}`` with the keyword arguments of
:class:`~weakseg.losses.SECLoss`: SEC's seeding loss on localization cues,
expansion loss on the image tags, and ``boundary: crf_inference`` (SEC's constrain-to-boundary;
``backprop_crf: true`` differentiates through the mean field, ``false`` is the ``*`` variant),
``dense_crf_loss`` (Tang et al.'s replacement) or ``none``. It *replaces* partial cross-entropy
(regularizers may still be added; not ``densecrf_adm``). The tags are the sample's ``tags``
(the classes of the full mask when the dataset has one, else of the scribbles). The cues are
the training labels: ``cue_dir: DIR`` with ``supervision: tags`` reads them from
``DIR/<id>.png`` (one class id per pixel, 255 = no cue, the format of
:func:`~weakseg.losses.load_cues`; maps of another size than the image are resized, nearest).
Computing SEC's cues (class activation maps plus saliency) is out of scope; as a stand-in,
``supervision: scribbles`` (or ``clicks``) without ``cue_dir`` makes every scribbled pixel a
cue of its class.

Table 4 (CRF as a trainable layer): ``crf_layer: {n_iter: 5, ...}`` (keyword arguments of
:class:`~weakseg.crf.CRFasRNN`, :data:`CRF_LAYER_KEYS`; ``{}`` for its defaults) follows the
network with a CRF-as-RNN layer (:class:`~weakseg.models.CRFLayerModel`): the losses apply to
its output, gradients flow through its iterations into the network and its parameters, and
evaluation, prediction and the checkpoint use the wrapped model.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from weakseg.engine.coercion import convert, numbers_from_strings, suggest
from weakseg.errors import ConfigError

if typing.TYPE_CHECKING:
    from weakseg.losses import Objective

__all__ = [
    "BEST_METRICS",
    "CRF_LAYER_KEYS",
    "DATASETS",
    "OPTIMIZERS",
    "PROPOSAL_CRF_KEYS",
    "PROPOSAL_METHODS",
    "ConfigError",
    "ConfigFileNotFoundError",
    "DataSettings",
    "ModelSettings",
    "ObjectiveSettings",
    "OptimizerSettings",
    "RunSettings",
    "TrainConfig",
    "apply_overrides",
    "build_regularizers",
    "load_config",
]

DATASETS: tuple[str, ...] = ("folder", "synthetic", "voc")
# Validation summary keys (higher is better) that may pick best.pth; *_3d are per volume.
BEST_METRICS: tuple[str, ...] = ("miou", "mean_dice", "pixel_accuracy", "mean_dice_3d")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
# Iterative proposals: how the network's predictions are refined into full masks.
PROPOSAL_METHODS: tuple[str, ...] = ("crf", "grabcut")
_KERNELS = ("n_iter", "w_bilateral", "theta_alpha", "theta_beta", "w_gaussian", "theta_gamma")
# The keyword arguments of dense_crf_inference / DenseCRF that ``proposal_crf`` may set.
PROPOSAL_CRF_KEYS: tuple[str, ...] = (*_KERNELS, "normalization", "backend", "line_search")
# The keyword arguments of CRFasRNN that ``crf_layer`` may set (K comes from the dataset).
CRF_LAYER_KEYS: tuple[str, ...] = (*_KERNELS, "normalization", "backend")


def _choice(key: str, value: str, choices: Sequence[str], source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r} ({source})")


def _at_least(config: Any, keys: Sequence[str], low: int, source: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value} ({source})")


def _number_in(
    config: Any,
    key: str,
    low: float,
    high: float = math.inf,
    source: str = "config",
    *,
    low_open: bool = False,
) -> None:
    """``getattr(config, key)`` is ``None`` or a finite number in ``[low, high]`` (``(low,
    high]`` when ``low_open``): NaN and infinities never pass."""
    value = getattr(config, key)
    if value is None:
        return
    _check_number(key, value, low, high, source, low_open=low_open)


def _check_number(
    key: str, value: Any, low: float, high: float, source: str, *, low_open: bool = False
) -> None:
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if math.isfinite(high):
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConfigError(f"{key} must be a finite number {bound}, got {value} ({source})")


@dataclasses.dataclass
class DataSettings:
    """Which images and labels, and how they are augmented and loaded."""

    dataset: str = "synthetic"  # folder | synthetic | voc
    data_root: str | None = None  # folder / voc root (synthetic: unused)
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation
    supervision: str = "scribbles"  # scribbles | clicks | full | tags | unlabeled
    shorten_ratio: float = 1.0
    # scribbles' box prior: unlabeled training pixels beyond the box of the scribbles, grown by
    # this many pixels, are background (class 0); None = off
    scribble_box_margin: int | None = None
    unlabeled_split: str | None = None  # semi-supervised: this split's images, without labels
    labeled_fraction: float = 1.0  # semi-supervised: share of train_split images keeping labels
    scribble_dir: str | None = None  # voc: ScribbleSup PNGs (default VOC2012/pascal_2012_scribble)
    label_dir: str | None = None  # full masks DIR/<id>.png replacing the labels (supervision: full)
    cue_dir: str | None = None  # localization cues DIR/<id>.png for losses.sec (supervision: tags)
    channels: int | None = None  # force 1 (gray) or 3 image channels
    mean: list[float] | None = None  # 0-255; None = ImageNet
    std: list[float] | None = None
    crop_size: int = 64
    scale_range: list[float] | None = dataclasses.field(default_factory=lambda: [0.5, 2.0])
    hflip: float = 0.5
    jitter: float = 0.0
    synthetic_train: int = 200
    synthetic_val: int = 50
    synthetic_size: int = 64
    num_workers: int = 2
    skip_bad: bool = False
    # volumes (.nii/.nii.gz/.h5) and the medical protocol
    slice_axis: int | None = None  # the stored array's axis to slice; None = through-plane
    intensity_percentiles: list[float] | None = None  # [low, high]: per-volume clip, to 0-255
    volume_pattern: str | None = None  # regex grouping 2D slice ids into volumes (3D metrics)
    rotation: float = 0.0  # degrees: random rotation in [-rotation, rotation]
    rot90_flip: bool = False  # one of the 8 orientations of the square crop, at random
    # train on slabs of this many adjacent slices of one volume, the regularizers in 3D (the
    # losses' spacing: [z, 1, 1]); 1 = single slices (see weakseg.data.slabs)
    slab_slices: int = 1

    def check_data(self, source: str) -> None:
        """Choices and ranges of the data settings."""
        self._check_medical(source)
        _choice("dataset", self.dataset, DATASETS, source)
        if self.dataset in ("folder", "voc") and not self.data_root:
            raise ConfigError(f"data_root must be set for dataset={self.dataset!r} ({source})")
        _at_least(self, ("crop_size",), 1, source)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers} ({source})")
        if self.scale_range is not None and len(self.scale_range) != 2:
            raise ConfigError(
                f"scale_range must be [low, high] or null, got {self.scale_range} ({source})"
            )
        if self.scale_range is not None:
            low, high = self.scale_range
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise ConfigError(
                    f"scale_range must be [low, high] with 0 < low <= high (finite), got "
                    f"{self.scale_range} ({source})"
                )
        _number_in(self, "shorten_ratio", 0.0, 1.0, source)
        if self.scribble_box_margin is not None:
            if self.scribble_box_margin < 0:
                raise ConfigError(
                    f"scribble_box_margin must be >= 0 or null, got {self.scribble_box_margin} "
                    f"({source})"
                )
            if self.supervision not in ("scribbles", "clicks"):
                raise ConfigError(
                    f"scribble_box_margin applies to supervision scribbles or clicks, got "
                    f"supervision={self.supervision!r} ({source})"
                )
        _number_in(self, "hflip", 0.0, 1.0, source)
        _number_in(self, "jitter", 0.0, math.inf, source)
        for key in ("mean", "std"):
            for value in getattr(self, key) or ():
                _check_number(key, value, 0.0, math.inf, source, low_open=key == "std")
        if not 0.0 < self.labeled_fraction <= 1.0:
            raise ConfigError(
                f"labeled_fraction is the share of the training images that keep their labels, "
                f"in (0, 1]; got {self.labeled_fraction} ({source})"
            )
        if self.labeled_fraction < 1.0 and self.supervision not in ("scribbles", "clicks", "full"):
            raise ConfigError(
                f"labeled_fraction={self.labeled_fraction} removes the labels of some images, but "
                f"supervision={self.supervision!r} has no pixel labels; use scribbles, clicks "
                f"or full ({source})"
            )

    def _check_medical(self, source: str) -> None:
        if self.slice_axis is not None and not -3 <= self.slice_axis <= 2:
            raise ConfigError(
                f"slice_axis must be in -3..2 or null, got {self.slice_axis} ({source})"
            )
        if self.intensity_percentiles is not None:
            low_high = self.intensity_percentiles
            if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100:
                raise ConfigError(
                    f"intensity_percentiles must be [low, high] with 0 <= low < high <= 100, "
                    f"got {low_high} ({source})"
                )
        if self.volume_pattern is not None:
            from weakseg.data.volumes import check_volume_pattern

            try:
                check_volume_pattern(self.volume_pattern)
            except ValueError as exc:
                raise ConfigError(f"{exc} ({source})") from None
        if not 0.0 <= self.rotation <= 180.0:
            raise ConfigError(
                f"rotation must be in [0, 180] degrees, got {self.rotation} ({source})"
            )


@dataclasses.dataclass
class ModelSettings:
    """The network."""

    model: str = "unet"
    pretrained: str | None = None  # None | imagenet | PATH (e.g. phase-1 checkpoint)
    output_stride: int | None = None
    sync_bn: bool = False
    # architecture options of the model (unet: base_channels, depth, dropout, channels_last)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def check_model(self, source: str) -> None:
        """The ``model_options`` names must be options of ``model``."""
        from weakseg.models import MODEL_OPTIONS

        allowed = MODEL_OPTIONS.get(self.model, ())
        for key in self.model_options:
            if key not in allowed:
                known = ", ".join(allowed) if allowed else "none"
                raise ConfigError(
                    f"unknown option {key!r} in model_options for model={self.model!r} "
                    f"({source}); its options: {known}{suggest(key, allowed)}"
                )


@dataclasses.dataclass
class ObjectiveSettings:
    """What the network is trained to minimize: the losses, a CRF layer, proposals."""

    # loss: partial cross-entropy + these terms (densecrf_adm and sec replace the pCE)
    losses: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # partial cross-entropy: mean per class, then over the classes present in the batch
    pce_class_balanced: bool = False
    # CRF-as-RNN layer after the network (Table 4): CRFasRNN keyword arguments; None = off
    crf_layer: dict[str, Any] | None = None
    # iterative proposals (ScribbleSup-style): every N epochs, predictions -> full-mask labels
    proposal_every: int | None = None  # epochs per round; None = off
    proposal_method: str = "crf"  # crf (mean field, scribbles clamped) | grabcut
    proposal_crf: dict[str, Any] = dataclasses.field(default_factory=dict)  # dense_crf_inference
    # regularizer weights ramped up over the first N iterations: w * exp(-5 (1 - i/N)^2)
    rampup_iterations: int = 0

    def objective(self, source: str = "config") -> Objective:
        """The :class:`~weakseg.losses.Objective` of ``losses`` and ``pce_class_balanced``,
        built once per setting."""
        from weakseg.losses import build_objective

        key = (_copy(self.losses), self.pce_class_balanced)
        cached = getattr(self, "_objective", None)
        if cached is None or cached[0] != key:
            objective = build_objective(
                self.losses, source, pce_class_balanced=self.pce_class_balanced
            )
            cached = (key, objective)
            object.__setattr__(self, "_objective", cached)
        return cached[1]

    def check_objective(self, source: str) -> None:
        """Normalize the loss and CRF mappings; build the objective and the CRFs (their
        constructors reject bad values, named)."""
        from weakseg.losses import LOSS_TERMS

        if not isinstance(self.losses, dict):
            raise ConfigError(
                f"losses must be a mapping of regularizer name to parameters ({source})"
            )
        losses = {}
        for name, params in self.losses.items():
            params = {} if params is None else params
            if name in LOSS_TERMS and isinstance(params, dict):
                allowed = LOSS_TERMS[name].parameters()
                params = numbers_from_strings(f"losses.{name}", params, allowed, source)
            if isinstance(params, dict):
                _check_loss_numbers(name, params, source)
            losses[name] = params
        self.losses = losses
        self.objective(source)
        _choice("proposal_method", self.proposal_method, PROPOSAL_METHODS, source)
        if self.rampup_iterations < 0:
            raise ConfigError(
                f"rampup_iterations must be >= 0, got {self.rampup_iterations} ({source})"
            )
        if self.proposal_every is not None and self.proposal_every < 1:
            raise ConfigError(
                f"proposal_every must be >= 1 (epochs), got {self.proposal_every} ({source})"
            )
        self.proposal_crf = _proposal_crf(self.proposal_crf, source)
        self.crf_layer = _crf_layer(self.crf_layer, source)


def _check_loss_numbers(name: str, params: dict[str, Any], source: str) -> None:
    """Every number of a loss's parameters is finite, and its weights (``weight``,
    ``seed_weight``...) are >= 0: a negative weight would train a negative loss."""
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key == "weight" or key.endswith("_weight"):
            _check_number(f"losses.{name}.{key}", value, 0.0, math.inf, source)
        elif not math.isfinite(value):
            raise ConfigError(
                f"losses.{name}.{key} must be a finite number, got {value} ({source})"
            )


def _copy(losses: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in losses.items()}


def _proposal_crf(params: Any, source: str) -> dict[str, Any]:
    """``proposal_crf``: keyword arguments of :class:`~weakseg.crf.DenseCRF`, checked by
    building one."""
    from weakseg.crf import DenseCRF

    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ConfigError(f"proposal_crf must be a mapping of parameters, got {params!r}")
    kwargs = numbers_from_strings("proposal_crf", params, PROPOSAL_CRF_KEYS, source)
    try:
        DenseCRF(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"proposal_crf: {exc} ({source})") from None
    return kwargs


def _crf_layer(params: Any, source: str) -> dict[str, Any] | None:
    """``crf_layer``: ``None`` (no layer) or keyword arguments of
    :class:`~weakseg.crf.CRFasRNN`, checked by building one."""
    from weakseg.crf import CRFasRNN

    if params is None:
        return None
    if not isinstance(params, dict):
        raise ConfigError(
            f"crf_layer must be a mapping of CRFasRNN parameters ({{}} for the defaults) or "
            f"null, got {params!r} ({source})"
        )
    kwargs = numbers_from_strings("crf_layer", params, CRF_LAYER_KEYS, source)
    try:
        CRFasRNN(2, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"crf_layer: {exc} ({source})") from None
    return kwargs


@dataclasses.dataclass
class OptimizerSettings:
    """Optimizer, schedule and batch."""

    optimizer: str = "sgd"
    lr: float = 0.01
    head_lr_mult: float = 1.0  # lr multiplier of the non-backbone parameters (DeepLab: 10)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 10
    max_iterations: int | None = None  # stop after this many optimizer steps
    batch_size: int = 8
    accumulate: int = 1  # gradient accumulation: batches per optimizer step
    lr_power: float = 0.9  # poly schedule
    warmup_iterations: int = 0
    warmup_factor: float = 0.001
    clip_grad_norm: float | None = None
    amp: bool = True  # mixed precision on CUDA: float16 autocast with a gradient scaler
    # bfloat16 autocast on the CPU (the network's convolutions in bfloat16, weights, optimizer and
    # losses in float32): 1.7-2.1x the MRI recipe's slices/s on an AVX512-BF16 CPU, expected to be
    # slower without bfloat16 instructions (benchmarks/medical_throughput.py --amp-cpu); ignored
    # on CUDA
    amp_cpu: bool = False
    # exponential moving average of the weights (decay per step, e.g. 0.99); validation and
    # checkpoints' "model" then hold the average (engine/weight_average.py); None = off
    ema_decay: float | None = None

    def check_optimizer(self, source: str) -> None:
        """Choices and ranges of the optimization settings."""
        _choice("optimizer", self.optimizer, OPTIMIZERS, source)
        _at_least(self, ("epochs", "batch_size", "accumulate", "max_iterations"), 1, source)
        _number_in(self, "lr", 0.0, math.inf, source, low_open=True)
        _number_in(self, "head_lr_mult", 0.0, math.inf, source, low_open=True)
        _number_in(self, "momentum", 0.0, 1.0, source)
        _number_in(self, "weight_decay", 0.0, math.inf, source)
        _number_in(self, "lr_power", 0.0, math.inf, source)
        _number_in(self, "warmup_factor", 0.0, 1.0, source)
        _number_in(self, "clip_grad_norm", 0.0, math.inf, source, low_open=True)
        _number_in(self, "ema_decay", 0.0, 1.0, source, low_open=True)
        if self.ema_decay == 1.0:
            raise ConfigError(f"ema_decay must be below 1 (1 never moves the average) ({source})")


@dataclasses.dataclass
class RunSettings:
    """Device, seed, output folder, checkpoints, validation and logging."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False
    # CPU threads of PyTorch and the numba lattice (torch.set_num_threads before seeding); None:
    # PyTorch's default (the cores, or OMP_NUM_THREADS). The weights depend on it (per-thread
    # partial sums): fix it, with deterministic, for bit-identical runs on one machine.
    threads: int | None = None
    output_dir: str = "runs/train"
    resume: str | None = None  # PATH, or "auto" = output_dir/checkpoint.pth when it exists
    checkpoint_every: int = 500  # iterations
    eval_every: int = 1  # epochs
    val_batch_size: int = 1
    log_every: int = 10  # iterations (TensorBoard scalars)
    progress: bool = True  # tqdm bar
    tensorboard: bool = True  # when the tensorboard package is installed
    best_metric: str = "miou"  # validation key (higher = better) that picks best.pth

    def check_run(self, source: str) -> None:
        """Ranges of the run settings."""
        keys = ("checkpoint_every", "eval_every", "val_batch_size", "log_every", "threads")
        _at_least(self, keys, 1, source)
        _choice("best_metric", self.best_metric, BEST_METRICS, source)


@dataclasses.dataclass
class TrainConfig(RunSettings, OptimizerSettings, ObjectiveSettings, ModelSettings, DataSettings):
    """Every setting of ``weakseg train``; see ``configs/*.yaml`` for commented examples."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (stored as ``args`` in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Check and convert ``values``; unknown keys and bad values raise ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must be a mapping of keys to values, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {key!r} in {source}{suggest(key, known)}")
            kwargs[key] = convert(key, value, hints[key], source)
        config = cls(**kwargs)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        """Check every section, then the settings that depend on each other."""
        self.check_data(source)
        self.check_model(source)
        self.check_optimizer(source)
        self.check_run(source)
        self.check_objective(source)
        self._check_proposals(source)
        self._check_tags(source)
        self._check_slabs(source)

    def _check_proposals(self, source: str) -> None:
        if self.label_dir is not None:
            if self.supervision != "full":
                raise ConfigError(
                    f"label_dir={self.label_dir!r} holds full masks: set supervision: full, got "
                    f"supervision={self.supervision!r} ({source})"
                )
            if self.proposal_every is not None:
                raise ConfigError(
                    f"label_dir (fixed masks) and proposal_every (masks regenerated during "
                    f"training) exclude each other; set one of them ({source})"
                )
        if self.proposal_every is not None and self.supervision not in ("scribbles", "clicks"):
            raise ConfigError(
                f"proposal_every: iterative proposals start from scribbles; set supervision "
                f"to scribbles or clicks, got {self.supervision!r} ({source})"
            )

    def _check_tags(self, source: str) -> None:
        """``losses.sec`` needs localization cues: ``cue_dir``, or the scribbles."""
        if self.cue_dir is not None:
            if "sec" not in self.losses:
                raise ConfigError(
                    f"cue_dir={self.cue_dir!r} holds localization cues for the SEC losses; add "
                    f"losses: {{sec: {{...}}}} or remove cue_dir ({source})"
                )
            if self.supervision != "tags":
                raise ConfigError(
                    f"cue_dir={self.cue_dir!r}: the cues replace the labels, set supervision: "
                    f"tags, got supervision={self.supervision!r} ({source})"
                )
        if "sec" not in self.losses:
            return
        if self.label_dir is not None or self.proposal_every is not None:
            raise ConfigError(
                f"losses.sec trains on localization cues, not on label_dir masks or proposals "
                f"(proposal_every); remove those or use cue_dir ({source})"
            )
        if self.cue_dir is None and self.supervision not in ("scribbles", "clicks"):
            raise ConfigError(
                f"losses.sec needs localization cues: set cue_dir: DIR (with supervision: tags), "
                f"or use the scribbled pixels as cues with supervision: scribbles or clicks; got "
                f"supervision={self.supervision!r} ({source})"
            )

    def _check_slabs(self, source: str) -> None:
        """``slab_slices > 1`` needs a folder dataset, a 3D ``spacing`` on every regularizer
        that takes one, and none of the modes that see single slices."""
        from weakseg.losses import LOSS_TERMS

        _at_least(self, ("slab_slices",), 1, source)
        if self.slab_slices == 1:
            return
        prefix = f"slab_slices={self.slab_slices}"
        if self.dataset != "folder":
            raise ConfigError(
                f"{prefix} needs dataset: folder (volume files, or 2D slices grouped by "
                f"volume_pattern), got dataset={self.dataset!r}; or set slab_slices: 1 ({source})"
            )
        unsupported = {
            "crf_layer": self.crf_layer is not None,
            "proposal_every": self.proposal_every is not None,
            "label_dir": self.label_dir is not None,
            "cue_dir": self.cue_dir is not None,
            "losses.densecrf_adm": "densecrf_adm" in self.losses,
            "losses.sec": "sec" in self.losses,
            "unlabeled_split": self.unlabeled_split is not None,
            "labeled_fraction": self.labeled_fraction < 1.0,
        }
        for key, clash in unsupported.items():
            if clash:
                setting = key if "." in key else f"{key}={getattr(self, key)!r}"
                raise ConfigError(
                    f"{prefix} does not work with {setting} (slabs train on folder volumes "
                    f"with pCE + regularizers only); remove it or set slab_slices: 1 ({source})"
                )
        for name, params in self.losses.items():
            if "spacing" in LOSS_TERMS[name].parameters():
                spacing = params.get("spacing")
                if not isinstance(spacing, list | tuple) or len(spacing) != 3:
                    raise ConfigError(
                        f"{prefix}: losses.{name} needs spacing: [z, 1, 1], the slab axis step "
                        f"in pixels (e.g. slice gap / pixel size), got {spacing!r} ({source})"
                    )


def build_regularizers(losses: dict[str, Any], source: str = "config") -> Objective:
    """Deprecated name of :func:`weakseg.losses.build_objective` (kept for old scripts)."""
    from weakseg.losses import build_objective

    return build_objective(losses, source)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from None
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``values`` with each ``key=value`` (dotted keys into mappings) applied."""
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for item in overrides:
        path, value = _parse_override(item)
        target = result
        for depth, part in enumerate(path[:-1]):
            current = target.get(part)
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[: depth + 1])} is not a mapping")
            current = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
            target[part] = current
            target = current
        target[path[-1]] = value
    return result


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (a :class:`ConfigError` and a ``FileNotFoundError``)."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: invalid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigFileNotFoundError(f"config file not found: {path}", "check the --config path")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {loaded!r}")
    return loaded or {}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The :class:`TrainConfig` of a YAML file (or the defaults) with ``key=value`` overrides.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: invalid YAML, unknown key (named, with a suggestion), bad value.
    """
    values = {} if path is None else read_yaml(path)
    source = "defaults" if path is None else str(path)
    if overrides:
        values = apply_overrides(values, overrides)
        source += " + --set"
    return TrainConfig.from_dict(values, source)
