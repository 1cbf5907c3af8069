"""scripts/acdc_regularizer_bias.py: its per-class normalized cut and its perturbations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.losses import GaussianAffinity, normalized_cut_loss

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "acdc_regularizer_bias.py"
_spec = importlib.util.spec_from_file_location("acdc_regularizer_bias", SCRIPT)
assert _spec is not None and _spec.loader is not None
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_normalized_cut_terms_sum_to_the_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 1, 20, 24, generator=generator, dtype=torch.float64) * 255
    probs = torch.randn(1, 4, 20, 24, generator=generator, dtype=torch.float64).softmax(dim=1)
    affinity = GaussianAffinity(images, 15.0, 10.0, dtype=torch.float64)
    terms = probe.normalized_cut_terms(probs, affinity)
    assert terms.shape == (4,)
    assert bool((terms >= 0).all() and (terms <= 1).all())
    expected = normalized_cut_loss(images, probs, sigma_rgb=15.0, sigma_xy=10.0)
    torch.testing.assert_close(terms.sum(), expected, rtol=1e-10, atol=0)


def test_perturbed_grows_and_shrinks_each_structure() -> None:
    mask = np.zeros((16, 16), dtype=np.int64)
    mask[4:8, 4:8] = 1
    mask[10:14, 10:14] = 2
    grown = probe.perturbed(mask, 1, grow=True)
    shrunk = probe.perturbed(mask, 1, grow=False)
    for k in (1, 2):
        assert (grown == k).sum() == 6 * 6 - 4  # a 1-px ring, no diagonal corners
        assert (shrunk == k).sum() == 2 * 2
    assert bool((grown[mask > 0] == mask[mask > 0]).all())


def test_segmentations_are_read_by_id_and_checked(tmp_path) -> None:
    assert probe.named_folders(["net=a/b", "x=y=z"]) == {"net": Path("a/b"), "x": Path("y=z")}
    for bad in ("net", "=dir", "net="):
        with pytest.raises(SystemExit, match="NAME=DIR"):
            probe.named_folders([bad])
    labels = np.zeros((6, 8), dtype=np.uint8)
    labels[2:4, 3:6] = 2
    Image.fromarray(labels).save(tmp_path / "case_1.png")
    read = probe.read_segmentation(tmp_path, "case_1", (6, 8))
    assert read.dtype == np.int64 and (read == labels).all()
    with pytest.raises(SystemExit, match=r"case_1\.png is \(6, 8\), the slice \(8, 6\)"):
        probe.read_segmentation(tmp_path, "case_1", (8, 6))
    with pytest.raises(SystemExit, match=r"no segmentation .*case_2\.png"):
        probe.read_segmentation(tmp_path, "case_2", (6, 8))
