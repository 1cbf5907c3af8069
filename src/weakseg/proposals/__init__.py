"""Proposal generation ("fake" full masks) for the paper's baselines.

- :func:`densecrf_adm_loss` / :class:`DenseCRFADMLoss`: DenseCRF-ADM online proposals
  (mean-field X from the network output, CE(X, S) on unlabeled pixels), Sec. 3 of the paper.
"""

from weakseg.proposals.adm import ADMLossOutput, DenseCRFADMLoss, densecrf_adm_loss

__all__ = ["ADMLossOutput", "DenseCRFADMLoss", "densecrf_adm_loss"]
