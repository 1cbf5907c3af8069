"""weakseg.proposals.iterative: network predictions -> full-mask proposals, scribbles clamped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from weakseg.crf import dense_crf_inference
from weakseg.data import SyntheticDataset
from weakseg.data.io import read_label
from weakseg.proposals import (
    network_proposals,
    proposal_round,
    proposals_complete,
    write_manifest,
    write_network_proposals,
)

CRF = {"n_iter": 3, "theta_alpha": 4.0, "theta_beta": 20.0, "theta_gamma": 2.0, "backend": "exact"}


def _model(k: int = 4, downsample: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, k, 3, padding=1)]
    if downsample:
        layers.append(nn.AvgPool2d(2))  # logits at half resolution, as most networks
    return nn.Sequential(*layers).eval()


def _inputs(b: int = 2, size: int = 12):
    g = torch.Generator().manual_seed(1)
    raw = torch.rand(b, 3, size, size, generator=g) * 255
    scribbles = torch.full((b, size, size), 255)
    scribbles[:, 2, 2:9] = 1
    scribbles[:, 9, 3:10] = 3
    scribbles[0, 5:8, 0] = 0
    return (raw - 128) / 64, raw, scribbles


def test_proposal_round() -> None:
    assert [proposal_round(e, 2) for e in range(7)] == [None, None, 2, 2, 4, 4, 6]
    assert [proposal_round(e, 1) for e in range(3)] == [None, 1, 2]
    with pytest.raises(ValueError, match=r"every must be >= 1"):
        proposal_round(3, 0)


def test_crf_proposals_are_the_clamped_mean_field_argmax() -> None:
    model = _model()
    image, raw, scribbles = _inputs()
    proposal = network_proposals(model, image, raw, scribbles, crf=CRF)
    with torch.no_grad():
        logits = nn.functional.interpolate(model(image), size=(12, 12), mode="bilinear")
    expected = dense_crf_inference(logits, raw, labels=scribbles, **CRF).argmax(1)
    assert proposal.dtype == torch.int64 and proposal.shape == (2, 12, 12)
    torch.testing.assert_close(proposal, expected)
    labeled = scribbles != 255
    assert bool((proposal[labeled] == scribbles[labeled]).all())
    # the CRF changes the network's own prediction somewhere (it is not a plain argmax)
    assert bool((proposal != logits.argmax(1)).any())


def test_grabcut_proposals_keep_scribbles() -> None:
    pytest.importorskip("cv2")
    image, raw, scribbles = _inputs(b=1, size=24)
    proposal = network_proposals(_model(), image, raw, scribbles, method="grabcut")
    labeled = scribbles != 255
    assert proposal.shape == (1, 24, 24)
    assert bool((proposal[labeled] == scribbles[labeled]).all())
    assert set(proposal.unique().tolist()) <= {0, 1, 3}  # only scribbled classes compete


def test_errors() -> None:
    image, raw, scribbles = _inputs()
    with pytest.raises(ValueError, match=r"method must be one of crf, grabcut, got 'gc'"):
        network_proposals(_model(), image, raw, scribbles, method="gc")
    with pytest.raises(ValueError, match=r"scribbles must have shape \[B, H, W\] = \(2, 12, 12\)"):
        network_proposals(_model(), image, raw, scribbles[:, :6])


def test_write_proposals_for_a_dataset_and_manifest(tmp_path) -> None:
    dataset = SyntheticDataset(3, 24, seed=5)
    model = _model(downsample=False)
    paths = write_network_proposals(
        model, dataset, tmp_path / "round", crf=CRF, indices=[2, 0], progress=False
    )
    assert [p.name for p in paths] == ["synthetic_00002.png", "synthetic_00000.png"]
    assert not proposals_complete(tmp_path / "round")  # the caller marks it complete
    for path, index in zip(paths, [2, 0], strict=True):
        sample = dataset[index]
        mask = torch.from_numpy(read_label(path)).long()
        expected = network_proposals(
            model, sample["image"][None], sample["image_raw"][None], sample["label"][None], crf=CRF
        )[0]
        torch.testing.assert_close(mask, expected)
    write_manifest(tmp_path / "round", {"epoch": 2})
    assert proposals_complete(tmp_path / "round")
    assert json.loads((tmp_path / "round" / "proposals.json").read_text()) == {"epoch": 2}
    with pytest.raises(ValueError, match=r"method must be one of"):
        write_network_proposals(model, dataset, tmp_path / "x", method="x", progress=False)
    assert np.unique(read_label(paths[0])).max() < 4
