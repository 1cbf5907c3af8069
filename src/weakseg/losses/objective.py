r"""The training objective: a registry of loss terms and the :class:`Objective` built from a
``losses`` mapping (a training config's ``losses``: name -> keyword arguments of its module).

.. math::
    L = \ell_{pCE}(S, Y) + \sum_r \lambda_r R_r(S)

or, when one term *replaces* partial cross-entropy (DenseCRF-ADM, which contains it; SEC, whose
labels are localization cues), that term's loss in place of :math:`\ell_{pCE}`. Each
:class:`LossTerm` of :data:`LOSS_TERMS` declares what its module consumes (:data:`INPUTS`:
logits or probabilities, images, labels, valid mask, tags), whether it replaces pCE, and what
it logs. :func:`build_objective` constructs the modules once; their constructors validate the
parameters, so an :class:`Objective` that exists is one whose settings were accepted.

Example:
    >>> objective = build_objective({"grid_potts": {"weight": 0.5}})
    >>> batch = {"label": torch.full((1, 8, 8), 255), "image_raw": torch.rand(1, 3, 8, 8) * 255,
    ...          "valid_mask": torch.ones(1, 8, 8, dtype=torch.bool)}
    >>> total, terms = objective(torch.randn(1, 2, 8, 8), batch)
    >>> list(terms)
    ['pce', 'grid_potts', 'loss']
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg.errors import ConfigError
from weakseg.losses.adm import DenseCRFADMLoss
from weakseg.losses.dense_crf import DenseCRFLoss
from weakseg.losses.dice import DiceLoss
from weakseg.losses.grid_potts import GridPottsLoss
from weakseg.losses.kernel_cut import KernelCutLoss
from weakseg.losses.normalized_cut import NormalizedCutLoss
from weakseg.losses.partial_ce import partial_cross_entropy
from weakseg.losses.sec import SECLoss
from weakseg.losses.seeding import cues_from_labels

__all__ = [
    "INPUTS",
    "LOSS_TERMS",
    "LossTerm",
    "Objective",
    "build_objective",
    "loss_names",
]

# What a term's module may consume, by name: the logits upsampled to the label size (float32),
# their softmax, the 0-255 images, the label map (255 = unlabeled), the valid-pixel mask and the
# image-level tags [B, K].
INPUTS: tuple[str, ...] = ("logits", "probs", "images", "labels", "valid_mask", "tags")
_BATCH_KEYS = {"images": "image_raw", "labels": "label", "valid_mask": "valid_mask", "tags": "tags"}

# A term's evaluation: (its contribution to the total, the values it logs by name).
TermValue = tuple[Tensor, dict[str, Tensor]]


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One entry of the registry: a loss module and how the objective calls it.

    Attributes:
        module: the ``nn.Module`` class built from the config's keyword arguments.
        inputs: the names (:data:`INPUTS`) of ``module.forward``'s arguments, in order.
        replaces_pce: the term's loss stands in for partial cross-entropy (at most one such).
        evaluate: ``(name, module, output) -> (contribution, logged)`` from the module's
            output; ``None`` = the output is the weighted value, logged under ``name``.
        regularizer: the term adds a regularizer of the output on all pixels to pCE (its
            weight follows the ``rampup_iterations`` ramp-up); ``False`` for a supervised term
            of the labels (Dice) and for a term that replaces pCE (ADM, SEC), which count in
            full from the first step.
    """

    module: type[nn.Module]
    inputs: tuple[str, ...]
    replaces_pce: bool = False
    evaluate: Callable[[str, nn.Module, Any, dict[str, Tensor]], TermValue] | None = None
    regularizer: bool = True

    def __post_init__(self) -> None:
        if self.replaces_pce and self.regularizer:
            raise ValueError(
                f"{self.module.__name__} replaces pCE, so it is no regularizer added to pCE: "
                "regularizer=False"
            )

    def parameters(self) -> list[str]:
        """The keyword arguments the module accepts."""
        return [p for p in inspect.signature(self.module.__init__).parameters if p != "self"]


def _dense_crf(name: str, module: nn.Module, value: Tensor, inputs: dict) -> TermValue:
    logged = {name: value.detach()}
    unweighted = _dense_crf_value(module, value)
    if unweighted is not None:
        logged["dense_crf_value"] = unweighted
    return value, logged


def _dense_crf_value(module: Any, weighted: Tensor) -> Tensor | None:
    """The unweighted ``"affinity"``-normalized dense CRF loss at full resolution when it comes
    for free (the term divided by its weight, when the term is that quantity), else ``None``:
    recomputing it would cost one more full-resolution filtering per step."""
    if module.normalization == "affinity" and module.scale_factor == 1.0 and module.weight != 0:
        return weighted.detach() / module.weight
    return None


def _adm(name: str, module: nn.Module, out: Any, inputs: dict) -> TermValue:
    """ADM's loss contains pCE: log pCE, the proposal CE (the rest) and R(S)."""
    pce = partial_cross_entropy(inputs["logits"], inputs["labels"])
    logged = {"pce": pce.detach(), name: (out.loss - pce).detach()}
    logged["dense_crf_value"] = out.dense_crf_loss
    return out.loss, logged


def _sec(name: str, module: Any, out: Any, inputs: dict) -> TermValue:
    """SEC's weighted terms (``boundary`` only when there is one)."""
    logged = {
        "seeding": module.seed_weight * out.seeding.detach(),
        "expansion": module.expand_weight * out.expansion.detach(),
    }
    if module.boundary != "none":
        logged["boundary"] = module.boundary_weight * out.boundary.detach()
    return out.loss, logged


_REGULARIZER_INPUTS = ("images", "probs", "valid_mask")

LOSS_TERMS: dict[str, LossTerm] = {
    "dense_crf": LossTerm(DenseCRFLoss, _REGULARIZER_INPUTS, evaluate=_dense_crf),
    "normalized_cut": LossTerm(NormalizedCutLoss, _REGULARIZER_INPUTS),
    "kernel_cut": LossTerm(KernelCutLoss, _REGULARIZER_INPUTS),
    "grid_potts": LossTerm(GridPottsLoss, _REGULARIZER_INPUTS),
    # Soft Dice on the labeled pixels: with full masks, pCE + Dice is the field's baseline.
    "dice": LossTerm(DiceLoss, ("probs", "labels"), regularizer=False),
    # DenseCRF-ADM (Table 2): pCE + CE(mean-field proposals, S); it contains pCE.
    "densecrf_adm": LossTerm(
        DenseCRFADMLoss,
        ("logits", "images", "labels", "valid_mask"),
        replaces_pce=True,
        evaluate=_adm,
        regularizer=False,
    ),
    # SEC (Table 3, image tags): the labels are localization cues.
    "sec": LossTerm(
        SECLoss,
        ("probs", "images", "cues", "tags", "valid_mask"),
        replaces_pce=True,
        evaluate=_sec,
        regularizer=False,
    ),
}
# Pairs of terms that may not be combined, and why.
_EXCLUSIVE = {
    frozenset({"densecrf_adm", "dense_crf"}): "densecrf_adm (ADM) and dense_crf (gradient "
    "descent) optimize the same dense CRF loss; use one of them",
}


def loss_names() -> tuple[str, ...]:
    """The names a ``losses`` mapping may use."""
    return tuple(LOSS_TERMS)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _module_kwargs(name: str, params: Any, source: str) -> dict[str, Any]:
    """``params`` checked against the module's keyword arguments; a K x K ``compat`` given as a
    nested list (YAML) becomes a tensor."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"losses.{name} must be a mapping of parameters, got {params!r}")
    allowed = LOSS_TERMS[name].parameters()
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"unknown parameter {key!r} in losses.{name} ({source}); known: "
                f"{', '.join(allowed)}{_suggest(key, allowed)}"
            )
    kwargs = dict(params)
    if isinstance(kwargs.get("compat"), list):
        try:
            kwargs["compat"] = torch.tensor(kwargs["compat"], dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"losses.{name}: compat: {exc} ({source})") from None
    return kwargs


def build_objective(
    losses: Mapping[str, Any] | None,
    source: str = "config",
    *,
    pce_class_balanced: bool = False,
) -> Objective:
    """The :class:`Objective` of a ``losses`` mapping (name -> keyword arguments) and the
    partial cross-entropy's ``class_balanced`` setting.

    Raises:
        ConfigError: an unknown name or parameter (named, with a suggestion), a value that the
            module's constructor rejects, two terms that cannot be combined.
    """
    losses = {} if losses is None else losses
    if not isinstance(losses, Mapping):
        raise ConfigError(f"losses must be a mapping of regularizer name to parameters ({source})")
    modules = {}
    for name, params in losses.items():
        if name not in LOSS_TERMS:
            known = list(LOSS_TERMS)
            raise ConfigError(
                f"unknown regularizer {name!r} in losses ({source}); known: "
                f"{', '.join(known)}{_suggest(name, known)}"
            )
        kwargs = _module_kwargs(name, params, source)
        try:
            modules[name] = LOSS_TERMS[name].module(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"losses.{name}: {exc} ({source})") from None
    try:
        return Objective(modules, pce_class_balanced=pce_class_balanced)
    except ValueError as exc:
        raise ConfigError(f"losses: {exc} ({source})") from None


def _upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    """``logits [B, K, h, w]`` or ``[B, K, D, h, w]`` resized bilinearly to ``size`` (H, W),
    slice by slice: the depth axis is never interpolated."""
    if logits.ndim == 4:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    batch, classes, depth = logits.shape[:3]
    slices = logits.transpose(1, 2).reshape(batch * depth, classes, *logits.shape[-2:])
    slices = F.interpolate(slices, size=size, mode="bilinear", align_corners=False)
    return slices.reshape(batch, depth, classes, *size).transpose(1, 2)


class Objective(nn.Module):
    """Partial cross-entropy (or the one term that replaces it) plus the other terms.

    Args:
        terms: name (a key of :data:`LOSS_TERMS`) -> module of that entry's class, already
            weighted (e.g. ``DenseCRFLoss(weight=...)``); in logging order.
        pce_class_balanced: the partial cross-entropy weighs every class present in the batch
            the same (``partial_cross_entropy(..., class_balanced=True)``).

    ``objective(logits, batch) -> (total, logged)``: ``logits [B, K, h, w]`` at any resolution
    (upsampled bilinearly to the labels' size, in float32), ``batch`` with ``label [B, H, W]``,
    ``image_raw [B, C, H, W]`` (0-255), ``valid_mask [B, H, W]`` and, for SEC, ``tags [B, K]``.
    Volumes (a 2D network's slabs of ``D`` slices) have a depth axis: ``logits [B, K, D, h,
    w]`` (each slice upsampled bilinearly), ``label`` and ``valid_mask [B, D, H, W]``,
    ``image_raw [B, C, D, H, W]``; the regularizers then work in 3D (their ``spacing``).
    ``logged`` holds detached scalars: ``pce`` (SEC: ``seeding``, ``expansion``, ``boundary``),
    each term's weighted value under its name (ADM: the proposal cross-entropy),
    ``dense_crf_value`` where it comes for free (not part of the sum) and ``loss``, the total.

    Raises:
        ValueError: an unknown name, a module of another class, two terms that replace
            partial cross-entropy, or two terms that cannot be combined.
    """

    def __init__(
        self, terms: Mapping[str, nn.Module] | None = None, *, pce_class_balanced: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(pce_class_balanced, bool):
            raise ValueError(
                f"pce_class_balanced must be True or False, got {pce_class_balanced!r}"
            )
        self.pce_class_balanced = pce_class_balanced
        terms = dict(terms or {})
        for name, module in terms.items():
            if name not in LOSS_TERMS:
                raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_TERMS)}")
            if not isinstance(module, LOSS_TERMS[name].module):
                raise ValueError(
                    f"loss {name!r} must be a {LOSS_TERMS[name].module.__name__}, got "
                    f"{type(module).__name__}"
                )
        replacing = [n for n in terms if LOSS_TERMS[n].replaces_pce]
        if len(replacing) > 1:
            raise ValueError(
                f"{' and '.join(replacing)} both replace partial cross-entropy (at most one loss "
                f"that replaces partial cross-entropy is allowed); use one of them"
            )
        for pair, reason in _EXCLUSIVE.items():
            if pair <= set(terms):
                raise ValueError(reason)
        self.terms = nn.ModuleDict(terms)
        self.replacing = replacing[0] if replacing else None

    def __getitem__(self, name: str) -> nn.Module:
        return self.terms[name]

    def __contains__(self, name: object) -> bool:
        return name in self.terms

    def __iter__(self):
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def inputs(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The named inputs of the terms: logits upsampled to the labels, probs when needed."""
        label = batch["label"]
        logits = logits.float()
        if logits.shape[-2:] != label.shape[-2:]:
            logits = _upsample(logits, label.shape[-2:])
        inputs = {"logits": logits}
        for name, key in _BATCH_KEYS.items():
            if key in batch:
                inputs[name] = batch[key]
        needed = {i for n in self.terms for i in LOSS_TERMS[n].inputs}
        if needed & {"probs", "cues"}:
            inputs["probs"] = logits.softmax(dim=1)  # (B, K, H, W) at full resolution
        if "cues" in needed:
            inputs["cues"] = cues_from_labels(label, logits.shape[1])  # (B, K, H, W)
        return inputs

    def forward(self, logits: Tensor, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = self.inputs(logits, batch)
        if self.replacing is None:
            pce = partial_cross_entropy(
                inputs["logits"], inputs["labels"], class_balanced=self.pce_class_balanced
            )
            total, logged = pce, {"pce": pce.detach()}
        else:
            total, logged = self._evaluate(self.replacing, inputs)
        for name in self.terms:
            if name != self.replacing:
                value, extra = self._evaluate(name, inputs)
                total = total + value
                logged.update(extra)
        logged["loss"] = total.detach()
        return total, logged

    def _evaluate(self, name: str, inputs: dict[str, Any]) -> TermValue:
        term, module = LOSS_TERMS[name], self.terms[name]
        output = module(*(inputs.get(key) for key in term.inputs))
        if term.evaluate is None:
            return output, {name: output.detach()}
        return term.evaluate(name, module, output, inputs)
