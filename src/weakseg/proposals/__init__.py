"""Proposal generation ("fake" full masks) for the paper's baselines.

- :func:`densecrf_adm_loss` / :class:`DenseCRFADMLoss`: DenseCRF-ADM online proposals
  (mean-field X from the network output, CE(X, S) on unlabeled pixels), Sec. 3 of the paper.
- :func:`grabcut_proposal` / :func:`write_grabcut_proposals`: one-vs-rest GrabCut masks from
  scribbles, the "GrabCut (one time)" baseline of Table 2 (needs
  ``pip install opencv-python-headless``, imported only when used).
"""

from weakseg.proposals.adm import ADMLossOutput, DenseCRFADMLoss, densecrf_adm_loss
from weakseg.proposals.grabcut import grabcut_proposal, write_grabcut_proposals

__all__ = [
    "ADMLossOutput",
    "DenseCRFADMLoss",
    "densecrf_adm_loss",
    "grabcut_proposal",
    "write_grabcut_proposals",
]
