"""Training on slabs of adjacent slices (``slab_slices``): the config's combination rules."""

from __future__ import annotations

import pytest

from weakseg.engine.config import ConfigError, load_config

_FOLDER = ["dataset=folder", "data_root=data", "slab_slices=3"]
_SPACED = "losses={dense_crf: {weight: 1.0, spacing: [5, 1, 1]}}"


def test_slab_config_accepted_and_default_is_single_slices() -> None:
    assert load_config(None, []).slab_slices == 1
    config = load_config(None, [*_FOLDER, _SPACED])
    assert config.slab_slices == 3 and config.losses["dense_crf"]["spacing"] == [5, 1, 1]
    assert load_config(None, [*_FOLDER, "losses={}"]).slab_slices == 3  # pCE alone


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["slab_slices=0"], "slab_slices must be >= 1, got 0"),
        (["slab_slices=3"], "slab_slices=3 needs dataset: folder .* got dataset='synthetic'"),
        ([*_FOLDER, "crf_layer={}"], r"slab_slices=3 does not work with crf_layer=\{\}"),
        ([*_FOLDER, "proposal_every=1"], "slab_slices=3 does not work with proposal_every=1"),
        (
            [*_FOLDER, "supervision=full", "label_dir=masks"],
            "slab_slices=3 does not work with label_dir='masks'",
        ),
        (
            [*_FOLDER, "losses={densecrf_adm: {}}"],
            "slab_slices=3 does not work with losses.densecrf_adm",
        ),
        ([*_FOLDER, "losses={sec: {}}"], "slab_slices=3 does not work with losses.sec"),
        ([*_FOLDER, "unlabeled_split=extra"], "does not work with unlabeled_split='extra'"),
        ([*_FOLDER, "labeled_fraction=0.5"], "does not work with labeled_fraction=0.5"),
        (
            [*_FOLDER, "losses={dense_crf: {weight: 1.0}}"],
            r"slab_slices=3: losses.dense_crf needs spacing: \[z, 1, 1\].* got None",
        ),
        (
            [*_FOLDER, "losses={kernel_cut: {weight: 1.0, spacing: [1, 1]}}"],
            r"losses.kernel_cut needs spacing: \[z, 1, 1\].* got \[1, 1\]",
        ),
    ],
)
def test_slab_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
