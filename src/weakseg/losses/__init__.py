"""Regularized losses for weakly-supervised segmentation (Tang et al., ECCV 2018, section 2).

The training loss of eq. (2) is ``partial_cross_entropy(logits, scribbles)`` plus ``lambda`` times
a regularizer of the softmax output:

- :func:`dense_crf_loss` / :class:`DenseCRFLoss`: relaxed dense CRF (Potts), eq. (4).
- :func:`normalized_cut_loss` / :class:`NormalizedCutLoss`: normalized cut, eq. (5).
- :func:`kernel_cut_loss` / :class:`KernelCutLoss`: CRF + gamma * normalized cut, eq. (6).
- :func:`grid_potts_loss` / :class:`GridPottsLoss`: Potts over a sparse neighbourhood grid.
- :func:`dice_loss` / :class:`DiceLoss`: soft Dice on the labeled pixels (with full masks, the
  field's cross-entropy + Dice baseline).
- :class:`GaussianAffinity`: the dense Gaussian of one image batch, built once and passed as
  ``affinity=`` to the dense losses that evaluate the same images many times.
- :mod:`weakseg.losses.sec`: SEC for image-tag supervision (:func:`sec_loss` /
  :class:`SECLoss`, Table 3), from its parts :mod:`~weakseg.losses.seeding`,
  :mod:`~weakseg.losses.expansion` and :mod:`~weakseg.losses.constrain_to_boundary`.
- :func:`densecrf_adm_loss` / :class:`DenseCRFADMLoss`: DenseCRF-ADM online proposals (Sec. 3).
- :mod:`weakseg.losses.objective`: the registry of training terms (:data:`LOSS_TERMS`) and the
  :class:`Objective` of a config's ``losses`` mapping (:func:`build_objective`).

Example:
    >>> import torch
    >>> logits = torch.randn(1, 3, 32, 32, requires_grad=True)
    >>> images = torch.rand(1, 3, 32, 32) * 255
    >>> scribbles = torch.full((1, 32, 32), 255)
    >>> scribbles[0, 4, 4:20] = 1
    >>> loss = partial_cross_entropy(logits, scribbles) + dense_crf_loss(images, logits.softmax(1))
    >>> loss.backward()
"""

from weakseg.losses.adm import ADMLossOutput, DenseCRFADMLoss, densecrf_adm_loss
from weakseg.losses.affinity import GaussianAffinity
from weakseg.losses.constrain_to_boundary import ConstrainToBoundaryLoss, constrain_to_boundary_loss
from weakseg.losses.cue_files import load_cues
from weakseg.losses.dense_crf import DenseCRFLoss, dense_crf_loss
from weakseg.losses.dice import DiceLoss, dice_loss
from weakseg.losses.expansion import ExpansionLoss, expansion_loss
from weakseg.losses.grid_potts import GridPottsLoss, grid_potts_loss
from weakseg.losses.kernel_cut import KernelCutLoss, kernel_cut_loss
from weakseg.losses.normalized_cut import NormalizedCutLoss, normalized_cut_loss
from weakseg.losses.objective import LOSS_TERMS, LossTerm, Objective, build_objective
from weakseg.losses.partial_ce import PartialCrossEntropy, partial_cross_entropy
from weakseg.losses.sec import SECLoss, SECLossOutput, sec_loss
from weakseg.losses.seeding import SeedingLoss, cues_from_labels, seeding_loss

__all__ = [
    "LOSS_TERMS",
    "ADMLossOutput",
    "ConstrainToBoundaryLoss",
    "DenseCRFADMLoss",
    "DenseCRFLoss",
    "DiceLoss",
    "ExpansionLoss",
    "GaussianAffinity",
    "GridPottsLoss",
    "KernelCutLoss",
    "LossTerm",
    "NormalizedCutLoss",
    "Objective",
    "PartialCrossEntropy",
    "SECLoss",
    "SECLossOutput",
    "SeedingLoss",
    "build_objective",
    "constrain_to_boundary_loss",
    "cues_from_labels",
    "dense_crf_loss",
    "densecrf_adm_loss",
    "dice_loss",
    "expansion_loss",
    "grid_potts_loss",
    "kernel_cut_loss",
    "load_cues",
    "normalized_cut_loss",
    "partial_cross_entropy",
    "sec_loss",
    "seeding_loss",
]
