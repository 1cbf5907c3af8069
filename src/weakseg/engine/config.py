"""Training configuration: one flat dataclass, filled from YAML then ``--set key=value``.

A YAML file (read with ``yaml.safe_load``) sets any of the :class:`TrainConfig` fields; the
command line overrides them with ``--set key=value`` (the value is parsed as YAML, so
``--set lr=0.01``, ``--set scale_range=[0.5,1.5]``, ``--set losses={}`` work; dotted keys reach
into the ``losses`` mapping: ``--set losses.dense_crf.weight=1e-9``). Unknown keys, values of the
wrong type and unknown loss parameters are :class:`ConfigError` naming the key.

``losses`` maps a regularizer name (:data:`REGULARIZERS`) to the keyword arguments of its module
(``weight`` and the loss's hyper-parameters), e.g.::

    losses:
      dense_crf: {weight: 2.0e-9, sigma_rgb: 15, sigma_xy: 100, scale_factor: 0.5,
                  normalization: rloss}

The training loss is partial cross-entropy on the labeled pixels plus the sum of these terms.

The training modes of Table 2 of the paper:

- DenseCRF-GD (the paper's method): ``losses: {dense_crf: {...}}``.
- DenseCRF-ADM (online proposals, Sec. 3): ``losses: {densecrf_adm: {...}}`` with the keyword
  arguments of :class:`~weakseg.proposals.DenseCRFADMLoss` (mean-field CRF settings, and
  ``sigma_rgb`` / ``sigma_xy`` of the reported dense CRF loss). It *replaces* partial
  cross-entropy, which it contains (:data:`PROPOSAL_LOSSES`); it cannot be combined with
  ``dense_crf``.
- GrabCut (one time): ``supervision: full`` with ``label_dir: DIR``, a folder of full masks
  ``DIR/<id>.png`` written by ``weakseg proposals grabcut``; they replace the dataset's labels.
- ScribbleSup-style iterative proposals: ``proposal_every: N``; the first ``N`` epochs train on
  the scribbles (pCE), then at the start of every N-th epoch the network's predictions on the
  training images, refined with the scribbles clamped (``proposal_method: crf`` = mean field with
  the :func:`~weakseg.crf.dense_crf_inference` arguments of ``proposal_crf``, or ``grabcut``),
  become the full-mask labels (``output_dir/proposals/epoch_<N>/``).

Table 3 (image tags): ``losses: {sec: {...}}`` with the keyword arguments of
:class:`~weakseg.losses.SECLoss` (:data:`TAG_LOSSES`): SEC's seeding loss on localization cues,
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
import difflib
import inspect
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from weakseg.crf import CRFasRNN, dense_crf_inference
from weakseg.errors import ConfigError
from weakseg.losses import DenseCRFLoss, GridPottsLoss, KernelCutLoss, NormalizedCutLoss, SECLoss
from weakseg.proposals import DenseCRFADMLoss

__all__ = [
    "CRF_LAYER_KEYS",
    "DATASETS",
    "OPTIMIZERS",
    "PROPOSAL_CRF_KEYS",
    "PROPOSAL_LOSSES",
    "PROPOSAL_METHODS",
    "REGULARIZERS",
    "TAG_LOSSES",
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "build_regularizers",
    "load_config",
    "normalize_crf_layer",
    "normalize_losses",
]

DATASETS: tuple[str, ...] = ("folder", "synthetic", "voc")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
REGULARIZERS: dict[str, type[nn.Module]] = {
    "dense_crf": DenseCRFLoss,
    "normalized_cut": NormalizedCutLoss,
    "kernel_cut": KernelCutLoss,
    "grid_potts": GridPottsLoss,
}
# Losses that replace partial cross-entropy (they contain it) instead of adding to it.
PROPOSAL_LOSSES: dict[str, type[nn.Module]] = {"densecrf_adm": DenseCRFADMLoss}
# Image-tag losses (Table 3): they replace partial cross-entropy; the labels are localization cues.
TAG_LOSSES: dict[str, type[nn.Module]] = {"sec": SECLoss}
# Iterative proposals: how the network's predictions are refined into full masks.
PROPOSAL_METHODS: tuple[str, ...] = ("crf", "grabcut")
# The keyword arguments of dense_crf_inference that ``proposal_crf`` may set.
PROPOSAL_CRF_KEYS: tuple[str, ...] = (
    "n_iter",
    "w_bilateral",
    "theta_alpha",
    "theta_beta",
    "w_gaussian",
    "theta_gamma",
    "normalization",
    "backend",
    "line_search",
)
# The keyword arguments of CRFasRNN that ``crf_layer`` may set (K comes from the dataset).
CRF_LAYER_KEYS: tuple[str, ...] = (
    "n_iter",
    "w_bilateral",
    "theta_alpha",
    "theta_beta",
    "w_gaussian",
    "theta_gamma",
    "normalization",
    "backend",
)
# String-valued loss and CRF parameters (any other string value is read as a number).
_STRING_KEYS: tuple[str, ...] = (
    "normalization",
    "backend",
    "boundary",
    "crf_normalization",
    "loss_normalization",
)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of ``weakseg train``; see ``configs/*.yaml`` for commented examples."""

    # data
    dataset: str = "synthetic"  # folder | synthetic | voc
    data_root: str | None = None  # folder / voc root (synthetic: unused)
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation
    supervision: str = "scribbles"  # scribbles | clicks | full | tags | unlabeled
    shorten_ratio: float = 1.0
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
    # model
    model: str = "unet"
    pretrained: str | None = None  # None | imagenet | PATH (e.g. phase-1 checkpoint)
    output_stride: int | None = None
    sync_bn: bool = False
    # loss: partial cross-entropy + these regularizers (densecrf_adm replaces the pCE)
    losses: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # CRF-as-RNN layer after the network (Table 4): CRFasRNN keyword arguments; None = off
    crf_layer: dict[str, Any] | None = None
    # iterative proposals (ScribbleSup-style): every N epochs, predictions -> full-mask labels
    proposal_every: int | None = None  # epochs per round; None = off
    proposal_method: str = "crf"  # crf (mean field, scribbles clamped) | grabcut
    proposal_crf: dict[str, Any] = dataclasses.field(default_factory=dict)  # dense_crf_inference
    # optimization
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
    amp: bool = True  # mixed precision, CUDA only
    # run
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False
    output_dir: str = "runs/train"
    resume: str | None = None  # PATH, or "auto" = output_dir/checkpoint.pth when it exists
    checkpoint_every: int = 500  # iterations
    eval_every: int = 1  # epochs
    val_batch_size: int = 1
    log_every: int = 10  # iterations (TensorBoard scalars)
    progress: bool = True  # tqdm bar
    tensorboard: bool = True  # when the tensorboard package is installed

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (stored as ``args`` in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Check and convert ``values``; unknown keys and bad values raise ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must be a mapping of keys to values, got {values!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {key!r} in {source}{_suggest(key, known)}")
            kwargs[key] = _convert(key, value, hints[key], source)
        config = cls(**kwargs)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        """Check the values that have a fixed set of choices or a range."""
        _choice("dataset", self.dataset, DATASETS, source)
        _choice("optimizer", self.optimizer, OPTIMIZERS, source)
        if self.dataset in ("folder", "voc") and not self.data_root:
            raise ConfigError(f"data_root must be set for dataset={self.dataset!r} ({source})")
        for key in ("epochs", "batch_size", "accumulate", "checkpoint_every", "eval_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)} ({source})")
        for key in ("crop_size", "val_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)} ({source})")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {self.max_iterations} ({source})")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr} ({source})")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers} ({source})")
        if self.scale_range is not None and len(self.scale_range) != 2:
            raise ConfigError(
                f"scale_range must be [low, high] or null, got {self.scale_range} ({source})"
            )
        self.losses = normalize_losses(self.losses, source)
        build_regularizers(self.losses, source)
        if "densecrf_adm" in self.losses and "dense_crf" in self.losses:
            raise ConfigError(
                f"losses: densecrf_adm (ADM) and dense_crf (gradient descent) optimize the same "
                f"dense CRF loss; use one of them ({source})"
            )
        self._validate_proposals(source)
        self._validate_labeled_fraction(source)
        self._validate_tags(source)
        self.crf_layer = normalize_crf_layer(self.crf_layer, source)

    def _validate_labeled_fraction(self, source: str) -> None:
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

    def _validate_tags(self, source: str) -> None:
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
        if "densecrf_adm" in self.losses:
            raise ConfigError(
                f"losses: sec and densecrf_adm both replace partial cross-entropy; use one of "
                f"them ({source})"
            )
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

    def _validate_proposals(self, source: str) -> None:
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
        _choice("proposal_method", self.proposal_method, PROPOSAL_METHODS, source)
        if self.proposal_every is not None:
            if self.proposal_every < 1:
                raise ConfigError(
                    f"proposal_every must be >= 1 (epochs), got {self.proposal_every} ({source})"
                )
            if self.supervision not in ("scribbles", "clicks"):
                raise ConfigError(
                    f"proposal_every: iterative proposals start from scribbles; set supervision "
                    f"to scribbles or clicks, got {self.supervision!r} ({source})"
                )
        self.proposal_crf = normalize_proposal_crf(self.proposal_crf, source)


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(key: str, value: str, choices: Sequence[str], source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r} ({source})")


def _convert(key: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str, list[float], dict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, value, options[0], source)
    bad = ConfigError(
        f"config key {key!r} must be {_type_name(hint)}, got {value!r} "
        f"({type(value).__name__}) in {source}"
    )
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        # YAML 1.1 reads 2e-9 (no dot) as a string; accept it as a number
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(hint)
        return [_convert(key, v, item, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): v for k, v in value.items()}
    return value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def normalize_losses(losses: dict[str, Any], source: str = "config") -> dict[str, dict]:
    """Check a ``losses`` mapping (name -> keyword arguments) and convert numbers written as
    strings (YAML 1.1 reads ``2e-9`` as one) to floats.

    Names are those of :data:`REGULARIZERS`, :data:`PROPOSAL_LOSSES` and :data:`TAG_LOSSES`.
    Raises ConfigError for an unknown regularizer or parameter, naming it.
    """
    if not isinstance(losses, dict):
        raise ConfigError(f"losses must be a mapping of regularizer name to parameters ({source})")
    known_losses = {**REGULARIZERS, **PROPOSAL_LOSSES, **TAG_LOSSES}
    normalized = {}
    for name, params in losses.items():
        if name not in known_losses:
            raise ConfigError(
                f"unknown regularizer {name!r} in losses ({source}); known: "
                f"{', '.join(known_losses)}{_suggest(name, known_losses)}"
            )
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"losses.{name} must be a mapping of parameters, got {params!r}")
        cls = known_losses[name]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        normalized[name] = _keyword_arguments(f"losses.{name}", params, allowed, source)
    return normalized


def _keyword_arguments(
    where: str, params: dict[str, Any], allowed: Sequence[str], source: str
) -> dict[str, Any]:
    """``params`` checked against the ``allowed`` names, numbers converted (:func:`_number`)
    and an integral ``n_iter`` made an int; ``where`` names the mapping in the errors."""
    kwargs = {}
    for key, value in params.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown parameter {key!r} in {where} ({source}); known: "
                f"{', '.join(allowed)}{_suggest(key, allowed)}"
            )
        value = _number(f"{where}.{key}", key, value, source)
        if key == "n_iter" and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}.n_iter must be an integer, got {value!r} ({source})")
            value = int(value)
        kwargs[key] = value
    return kwargs


def _number(where: str, key: str, value: Any, source: str) -> Any:
    """``value``, as a float when it is a string (YAML 1.1 reads ``2e-9`` as one), except for
    the string-valued keys."""
    if isinstance(value, str) and key not in _STRING_KEYS:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r} ({source})") from None
    return value


def normalize_proposal_crf(params: Any, source: str = "config") -> dict[str, Any]:
    """Check ``proposal_crf`` (keyword arguments of :func:`~weakseg.crf.dense_crf_inference`
    among :data:`PROPOSAL_CRF_KEYS`) and its values, on a tiny input.

    Raises ConfigError naming an unknown key or a rejected value.
    """
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ConfigError(f"proposal_crf must be a mapping of parameters, got {params!r}")
    kwargs = _keyword_arguments("proposal_crf", params, PROPOSAL_CRF_KEYS, source)
    try:  # reject bad values now rather than at the first proposal round, epochs later
        dense_crf_inference(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"proposal_crf: {exc} ({source})") from None
    return kwargs


def normalize_crf_layer(params: Any, source: str = "config") -> dict[str, Any] | None:
    """Check ``crf_layer``: ``None`` (no layer) or keyword arguments of
    :class:`~weakseg.crf.CRFasRNN` among :data:`CRF_LAYER_KEYS`, whose values a layer built
    here accepts.

    Raises ConfigError naming an unknown key or a rejected value.
    """
    if params is None:
        return None
    if not isinstance(params, dict):
        raise ConfigError(
            f"crf_layer must be a mapping of CRFasRNN parameters ({{}} for the defaults) or "
            f"null, got {params!r} ({source})"
        )
    kwargs = _keyword_arguments("crf_layer", params, CRF_LAYER_KEYS, source)
    try:  # reject bad values now rather than at the first training step
        CRFasRNN(2, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"crf_layer: {exc} ({source})") from None
    return kwargs


def build_regularizers(losses: dict[str, Any], source: str = "config") -> dict[str, nn.Module]:
    """The loss modules of a ``losses`` mapping (name -> keyword arguments): regularizers,
    :class:`~weakseg.proposals.DenseCRFADMLoss` for ``densecrf_adm`` and
    :class:`~weakseg.losses.SECLoss` for ``sec``.

    Raises ConfigError for an unknown regularizer or parameter (naming it), and for values the
    loss module rejects.
    """
    modules = {}
    for name, kwargs in normalize_losses(losses, source).items():
        cls = {**REGULARIZERS, **PROPOSAL_LOSSES, **TAG_LOSSES}[name]
        try:
            if isinstance(kwargs.get("compat"), list):  # a K x K label cost written in YAML
                kwargs = {**kwargs, "compat": torch.tensor(kwargs["compat"], dtype=torch.float32)}
            modules[name] = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"losses.{name}: {exc} ({source})") from None
    return modules


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


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The :class:`TrainConfig` of a YAML file (or the defaults) with ``key=value`` overrides.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: invalid YAML, unknown key (named, with a suggestion), bad value.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML in {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {loaded!r}")
        values = loaded or {}
        source = str(path)
    if overrides:
        values = apply_overrides(values, overrides)
        source += " + --set"
    return TrainConfig.from_dict(values, source)
