"""weakseg.engine.preflight: the label files of the splits in use, checked before training."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import weakseg.data.check
from weakseg.data import write_synthetic_dataset
from weakseg.engine.preflight import CACHE_NAME, check_labels, label_folders
from weakseg.errors import DataError


def _config(root, **values):
    settings = {
        "dataset": "folder",
        "data_root": str(root),
        "train_split": "train",
        "val_split": "val",
        "supervision": "scribbles",
        "label_dir": None,
        "cue_dir": None,
    }
    settings.update(values)
    return SimpleNamespace(**settings)


def test_label_folders_follow_the_supervision(tmp_path) -> None:
    assert label_folders(_config(tmp_path)) == {"train": ("scribbles",), "val": ("masks",)}
    assert label_folders(_config(tmp_path, supervision="full"))["train"] == ("masks",)
    assert label_folders(_config(tmp_path, supervision="full", label_dir="x")) == {
        "val": ("masks",)
    }  # the masks of label_dir replace the dataset's
    assert label_folders(_config(tmp_path, val_split=None, supervision="unlabeled")) == {}
    assert label_folders(_config(tmp_path, val_split="train")) == {"train": ("scribbles", "masks")}
    assert label_folders(_config(tmp_path, dataset="synthetic")) == {}


def _poison(path) -> None:
    label = np.array(Image.open(path))
    label[0, 0] = 7
    Image.fromarray(label).save(path)


def test_bad_value_names_the_file_and_value(tmp_path) -> None:
    root = write_synthetic_dataset(tmp_path / "d", n_train=3, n_val=2, size=16)
    first, second = sorted((root / "scribbles").iterdir())[:2]
    _poison(first)
    _poison(second)
    with pytest.raises(DataError) as info:
        check_labels(_config(root), 4)
    message = str(info.value)
    assert message.startswith(f"split 'train': {first}: scribble file {first} holds label")
    assert "{7} >= num_classes=4" in message and "(and 1 more bad label files)" in message
    assert "'weakseg data check" in message
    # an unused folder is not checked: full supervision reads the masks
    assert check_labels(_config(root, supervision="full"), 4) == 2


def test_clean_result_is_remembered_until_a_file_changes(tmp_path, monkeypatch) -> None:
    root = write_synthetic_dataset(tmp_path / "d", n_train=3, n_val=2, size=16)
    run = tmp_path / "run"
    run.mkdir()
    calls = []
    real = weakseg.data.check.check_split_labels

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(weakseg.data.check, "check_split_labels", counting)
    assert check_labels(_config(root), 4, run) == 2
    assert (run / CACHE_NAME).is_file() and calls == ["train", "val"]
    assert check_labels(_config(root), 4, run) == 0 and calls == ["train", "val"]  # remembered
    assert check_labels(_config(root), 5, run) == 2  # another K: checked again
    mask = sorted((root / "masks").iterdir())[-1]
    _poison(mask)
    os.utime(mask, ns=(1, 1))  # a changed file (size or time) is read again
    with pytest.raises(DataError, match=r"split 'val': .*holds label values \{7\}"):
        check_labels(_config(root), 4, run)
