"""Proposal generation ("fake" full masks) for the paper's baselines (Table 2).

- DenseCRF-ADM online proposals (Sec. 3 of the paper) are a loss:
  :class:`weakseg.losses.DenseCRFADMLoss` (re-exported here), ``losses: {densecrf_adm: {...}}``.
- :func:`grabcut_proposal` / :func:`write_grabcut_proposals`: one-vs-rest GrabCut masks from
  scribbles, the "GrabCut (one time)" baseline (``weakseg proposals grabcut``, then
  ``supervision: full`` + ``label_dir``; needs ``pip install opencv-python-headless``, imported
  only when used).
- :func:`network_proposals` / :func:`write_network_proposals`: the network's predictions refined
  by dense CRF mean field (or GrabCut) with the scribbles clamped, the "ScribbleSup (iterative)"
  baseline (``proposal_every: N`` in a training config).
"""

from weakseg.losses.adm import ADMLossOutput, DenseCRFADMLoss, densecrf_adm_loss
from weakseg.proposals.grabcut import grabcut_proposal, write_grabcut_proposals
from weakseg.proposals.iterative import (
    network_proposals,
    proposal_round,
    proposals_complete,
    write_manifest,
    write_network_proposals,
)

__all__ = [
    "ADMLossOutput",
    "DenseCRFADMLoss",
    "densecrf_adm_loss",
    "grabcut_proposal",
    "network_proposals",
    "proposal_round",
    "proposals_complete",
    "write_grabcut_proposals",
    "write_manifest",
    "write_network_proposals",
]
