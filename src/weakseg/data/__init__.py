"""Datasets, scribble tools and joint transforms.

- :class:`FolderDataset`: your own data in the folder format (``images/``, ``scribbles/``,
  optional ``masks/``, ``splits/<name>.txt``, ``classes.txt``), e.g. ``data/acdc-scribble``.
- :class:`VOCDataset`: PASCAL VOC 2012 + SBD with ScribbleSup scribbles.
- :class:`SyntheticDataset`: the embedded default for demos and tests;
  :func:`write_synthetic_volumes`: a tiny NIfTI cardiac-like set (volumes, scribbles for the
  training cases, masks for the validation cases).
- :mod:`weakseg.data.volumes`: NIfTI / HDF5 volumes, slice axis, spacing, intensity scaling,
  grouping of 2D slice ids into volumes, NIfTI output.
- :mod:`weakseg.data.check`: what a folder dataset's splits hold and every problem
  (``weakseg data check``).
- :class:`LabelFolderDataset`: any of them with the labels read from a folder of full masks
  (GrabCut or iterative proposals).
- :class:`SlabDataset` (:mod:`weakseg.data.slabs`): slabs of adjacent slices of a folder
  dataset's volumes, one augmentation per slab, for 3D regularizers on a 2D network.
- :mod:`weakseg.data.scribbles`: simulate / shorten scribbles, tags, statistics.
- :mod:`weakseg.data.transforms`: ``torchvision.transforms.v2`` joint transforms.

Every dataset returns the sample dict documented in :mod:`weakseg.data.dataset`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weakseg.data.dataset import SUPERVISIONS, SegmentationDataset
    from weakseg.data.folder import FolderDataset
    from weakseg.data.io import IGNORE_INDEX, DataError
    from weakseg.data.label_folder import LabelFolderDataset
    from weakseg.data.scribbles import (
        ScribbleStats,
        image_tags,
        shorten_scribbles,
        simulate_scribbles,
    )
    from weakseg.data.slabs import SlabDataset
    from weakseg.data.synthetic import SYNTHETIC_CLASSES, SyntheticDataset, write_synthetic_dataset
    from weakseg.data.synthetic_volumes import SYNTHETIC_VOLUME_CLASSES, write_synthetic_volumes
    from weakseg.data.transforms import eval_transforms, train_transforms
    from weakseg.data.voc import VOCDataset
    from weakseg.data.xml_scribbles import VOC_CLASSES, convert_xml_dir

# Names resolved on first use (PEP 562), so that importing a light submodule such as
# weakseg.data.io or weakseg.data.volumes does not import torch through the datasets.
_EXPORTS: dict[str, str] = {
    "DataError": "weakseg.data.io",
    "FolderDataset": "weakseg.data.folder",
    "IGNORE_INDEX": "weakseg.data.io",
    "LabelFolderDataset": "weakseg.data.label_folder",
    "SUPERVISIONS": "weakseg.data.dataset",
    "SYNTHETIC_CLASSES": "weakseg.data.synthetic",
    "SYNTHETIC_VOLUME_CLASSES": "weakseg.data.synthetic_volumes",
    "ScribbleStats": "weakseg.data.scribbles",
    "SegmentationDataset": "weakseg.data.dataset",
    "SlabDataset": "weakseg.data.slabs",
    "SyntheticDataset": "weakseg.data.synthetic",
    "VOCDataset": "weakseg.data.voc",
    "VOC_CLASSES": "weakseg.data.xml_scribbles",
    "convert_xml_dir": "weakseg.data.xml_scribbles",
    "eval_transforms": "weakseg.data.transforms",
    "image_tags": "weakseg.data.scribbles",
    "shorten_scribbles": "weakseg.data.scribbles",
    "simulate_scribbles": "weakseg.data.scribbles",
    "train_transforms": "weakseg.data.transforms",
    "write_synthetic_dataset": "weakseg.data.synthetic",
    "write_synthetic_volumes": "weakseg.data.synthetic_volumes",
}

__all__ = [
    "IGNORE_INDEX",
    "SUPERVISIONS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_VOLUME_CLASSES",
    "VOC_CLASSES",
    "DataError",
    "FolderDataset",
    "LabelFolderDataset",
    "ScribbleStats",
    "SegmentationDataset",
    "SlabDataset",
    "SyntheticDataset",
    "VOCDataset",
    "convert_xml_dir",
    "eval_transforms",
    "image_tags",
    "shorten_scribbles",
    "simulate_scribbles",
    "train_transforms",
    "write_synthetic_dataset",
    "write_synthetic_volumes",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weakseg.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
