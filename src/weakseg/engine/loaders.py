"""Datasets and loaders of a :class:`~weakseg.engine.config.TrainConfig`, reproducible per epoch.

Resuming a run exactly needs the data of every step to depend only on ``(seed, epoch, step)``:

- :class:`ShardedSampler` draws the epoch's order from ``seed + epoch`` (like
  ``DistributedSampler``), gives each process its shard, and can start mid-epoch;
- :class:`EpochSeeded` seeds Python, NumPy and torch from ``(seed, epoch, index)`` around each
  sample's augmentation (and restores the caller's generators), so a sample's crop does not
  depend on the worker that loads it nor on what came before.

With ``label_dir`` (GrabCut masks) or ``proposal_every`` (iterative proposals) the training
split is a :class:`~weakseg.data.LabelFolderDataset`, whose ``label_dir`` says where the
labels come from (:func:`label_folder` finds it).

Semi-supervised training (Sec. 4.5 of the paper) mixes labeled and unlabeled images in each
batch: partial cross-entropy sees the labeled pixels only (it is 0 on a batch without any) and
the regularizers see every image. The unlabeled images come from ``unlabeled_split``, or, with
``labeled_fraction: f < 1``, from the training split itself: :class:`PartiallyLabeled` keeps the
labels of ``f * N`` of its ``N`` images, rounded half up (:func:`labeled_indices`: chosen by
``seed``; the images of a smaller fraction are among those of a larger one), and makes the
others' ``label`` all 255, like ``supervision: unlabeled`` (their ``tags`` and ``mask`` stay).

With ``slab_slices: S > 1`` the training samples are slabs of ``S`` adjacent slices of one
volume (:class:`~weakseg.data.slabs.SlabDataset`); which slabs an epoch holds depends on
``(seed, epoch)`` only (:meth:`EpochSeeded.set_epoch` passes the epoch on), and their number
is the same in every epoch, so the sampler's positions, resuming and DDP shards work as for
slices. Validation stays per slice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from weakseg.data import (
    FolderDataset,
    LabelFolderDataset,
    SyntheticDataset,
    VOCDataset,
    eval_transforms,
    train_transforms,
)
from weakseg.data.io import IGNORE_INDEX
from weakseg.data.slabs import SlabDataset
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.engine.config import ConfigError, TrainConfig

__all__ = [
    "EpochSeeded",
    "PartiallyLabeled",
    "ShardedSampler",
    "build_dataset",
    "build_datasets",
    "build_train_loader",
    "build_val_loader",
    "label_folder",
    "labeled_indices",
    "pad_collate",
]

# Entropy that separates the choice of the labeled images from the other draws of ``seed`` (the
# sampler's epoch-0 order is ``randperm`` of the same seed).
_LABELED_STREAM = 0x1ABE1ED


class ShardedSampler(Sampler[int]):
    """Indices of one process for one epoch: a permutation seeded by ``seed + epoch`` (or the
    identity when ``shuffle=False``), padded by wrapping to a multiple of ``num_replicas``, every
    ``num_replicas``-th from ``rank``, then the first ``start`` skipped (:meth:`set_epoch`)."""

    def __init__(
        self, size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        self.size, self.num_replicas, self.rank = size, num_replicas, rank
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start = 0, 0
        self.per_replica = -(-size // num_replicas) if size else 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` indices (resuming)."""
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = self.per_replica * self.num_replicas
        order = (order * (total // max(len(order), 1) + 1))[:total]
        return iter(order[self.rank :: self.num_replicas][self.start :])

    def __len__(self) -> int:
        return max(self.per_replica - self.start, 0)


class EpochSeeded(Dataset):
    """``dataset[index]`` with Python, NumPy and torch seeded by ``(seed, epoch, index)``.

    :meth:`set_epoch` also sets the epoch of a ``dataset`` that has one (slabs: which slices
    form the epoch's slabs).
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sequence = np.random.SeedSequence([self.seed, self.epoch, index])
        sample_seed = int(sequence.generate_state(1)[0])
        # transforms draw from the global generators: seed them, then give them back
        python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(sample_seed)
                np.random.seed(sample_seed)  # noqa: NPY002
                torch.manual_seed(sample_seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002


def labeled_indices(size: int, fraction: float, seed: int = 0) -> list[int]:
    """The sorted indices of the ``fraction * size`` images (rounded half up, at least one) that
    keep their labels in semi-supervised training: the first ones of a permutation drawn from
    ``seed``, so the images of a smaller fraction are among those of a larger one.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or ``size`` < 1.

    Example:
        >>> len(labeled_indices(10, 0.25)), len(labeled_indices(10, 0.5))
        (3, 5)
        >>> set(labeled_indices(10, 0.25)) <= set(labeled_indices(10, 0.5))
        True
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    count = max(1, int(fraction * size + 0.5))
    order = np.random.default_rng([seed, _LABELED_STREAM]).permutation(size)
    return sorted(int(index) for index in order[:count])


class PartiallyLabeled(Dataset):
    """``dataset`` with the ``label`` of every sample but the ``labeled`` ones all 255 (unlabeled:
    only the regularizers apply to it); other keys unchanged.

    Args:
        dataset: a weakseg training set (any of :func:`build_datasets`' kinds).
        labeled: the indices that keep their labels (:func:`labeled_indices`).

    Example::

        >>> train = PartiallyLabeled(train, labeled_indices(len(train), 0.25, seed=0))
    """

    def __init__(self, dataset: Dataset, labeled: Sequence[int]) -> None:
        self.dataset = dataset
        self.labeled = frozenset(int(index) for index in labeled)
        self.class_names = list(dataset.class_names)
        self.has_masks = bool(getattr(dataset, "has_masks", False))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        if index not in self.labeled:
            sample = {**sample, "label": torch.full_like(sample["label"], IGNORE_INDEX)}
        return sample

    def __repr__(self) -> str:
        return f"PartiallyLabeled({self.dataset!r}, {len(self.labeled)} of {len(self)} labeled)"


def _mean_std(config: TrainConfig) -> tuple[Sequence[float], Sequence[float]]:
    return tuple(config.mean or IMAGENET_MEAN), tuple(config.std or IMAGENET_STD)


def build_dataset(
    config: TrainConfig,
    split: str,
    supervision: str,
    transform: Any = None,
    load_masks: bool | None = None,
) -> Dataset:
    """The ``split`` of ``config``'s dataset with ``supervision`` and ``transform`` (no
    ``label_dir``: see :func:`build_datasets`); ``load_masks=True``: every sample needs its
    full mask (folder datasets: a missing one is an error naming the file)."""
    mean, std = _mean_std(config)
    if config.dataset == "synthetic":
        train = split == config.train_split
        count = config.synthetic_train if train else config.synthetic_val
        return SyntheticDataset(
            count,
            config.synthetic_size,
            seed=config.seed * 2 + (0 if train else 1),
            supervision=supervision,
            transform=transform,
            shorten_ratio=config.shorten_ratio if supervision == "scribbles" else 1.0,
            mean=mean,
            std=std,
        )
    common = {
        "supervision": supervision,
        "transform": transform,
        "skip_bad": config.skip_bad,
        "shorten_ratio": config.shorten_ratio if supervision == "scribbles" else 1.0,
        "mean": mean,
        "std": std,
    }
    if config.dataset == "folder":
        return FolderDataset(
            config.data_root,
            split,
            channels=config.channels,
            slice_axis=config.slice_axis,
            intensity_percentiles=config.intensity_percentiles,
            load_masks=load_masks,
            **common,
        )
    return VOCDataset(config.data_root, split, scribble_dir=config.scribble_dir, **common)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset | None, list[str], int]:
    """``(train, val or None, class_names, in_channels)`` of ``config``.

    With ``labeled_fraction < 1`` the training split is a :class:`PartiallyLabeled` (the others
    lose their labels); ``train`` mixes in the ``unlabeled_split`` images (label all 255) when
    set; ``val`` has full
    masks (``supervision="unlabeled"``: it needs no scribbles). With ``label_dir`` the training
    split is a :class:`~weakseg.data.LabelFolderDataset` reading its labels there (the dataset's
    own labels are not needed: it is read with ``supervision="unlabeled"``); with
    ``proposal_every`` it is one with ``label_dir=None`` (the scribbles, until the training loop
    points it at a proposal folder); with ``cue_dir`` it is one reading SEC's localization cues
    there (resized to the image when stored at another size).
    """
    mean, _ = _mean_std(config)
    scale = tuple(config.scale_range) if config.scale_range is not None else None
    transform = train_transforms(
        config.crop_size,
        scale=scale,
        hflip=config.hflip,
        jitter=config.jitter,
        mean=mean,
        rotation=config.rotation,
        rot90_flip=config.rot90_flip,
        box_margin=config.scribble_box_margin,
    )
    if config.label_dir is not None:
        base = build_dataset(config, config.train_split, "unlabeled")
        train = LabelFolderDataset(base, config.label_dir, transform)
    elif config.cue_dir is not None:  # SEC's localization cues as the labels
        base = build_dataset(config, config.train_split, "unlabeled")
        train = LabelFolderDataset(base, config.cue_dir, transform, resize=True)
    elif config.proposal_every is not None:
        base = build_dataset(config, config.train_split, config.supervision)
        train = LabelFolderDataset(base, None, transform)
    else:
        train = build_dataset(config, config.train_split, config.supervision, transform)
    if config.slab_slices > 1:
        train = _slabs(train, config)
    class_names = list(train.class_names)
    if config.labeled_fraction < 1.0:
        train = PartiallyLabeled(
            train, labeled_indices(len(train), config.labeled_fraction, config.seed)
        )
    if config.unlabeled_split:
        unlabeled = build_dataset(config, config.unlabeled_split, "unlabeled", transform)
        train = ConcatDataset([train, unlabeled])
    val = None
    if config.val_split:
        val = build_dataset(
            config, config.val_split, "unlabeled", eval_transforms(mean=mean), load_masks=True
        )
        if not getattr(val, "has_masks", False):
            raise ConfigError(
                f"val_split {config.val_split!r} has no full masks to evaluate against; "
                "set val_split: null to train without validation"
            )
    if len(train) == 0:
        raise ConfigError(f"train_split {config.train_split!r} holds no sample")
    in_channels = int(train[0]["image"].shape[-3]) if config.channels is None else config.channels
    return train, val, class_names, in_channels


def _slabs(train: Dataset, config: TrainConfig) -> SlabDataset:
    """The slabs of ``config.slab_slices`` slices of the training split's volumes."""
    slabs = SlabDataset(
        train, config.slab_slices, seed=config.seed, volume_pattern=config.volume_pattern
    )
    if len(slabs) == 0:
        raise ConfigError(
            f"slab_slices={config.slab_slices}: no volume of train_split {config.train_split!r} "
            f"has {config.slab_slices} consecutive slices (2D slice ids are grouped by "
            f"volume_pattern, which must give the slice number: <volume>_slice_<n> by default)"
        )
    return slabs


def label_folder(dataset: Dataset) -> LabelFolderDataset | None:
    """The :class:`~weakseg.data.LabelFolderDataset` of a training set of
    :func:`build_datasets` (also inside its ``unlabeled_split`` mix or a
    :class:`PartiallyLabeled`), or ``None``."""
    if isinstance(dataset, ConcatDataset):
        dataset = dataset.datasets[0]
    if isinstance(dataset, PartiallyLabeled):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, LabelFolderDataset) else None


def build_train_loader(
    dataset: Dataset,
    config: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> tuple[DataLoader, ShardedSampler, EpochSeeded]:
    """The training loader (drop_last, :class:`ShardedSampler`, :class:`EpochSeeded`)."""
    seeded = EpochSeeded(dataset, config.seed)
    sampler = ShardedSampler(len(dataset), world_size, rank, shuffle=True, seed=config.seed)
    if sampler.per_replica < config.batch_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than the {sampler.per_replica} training "
            f"samples of each of the {world_size} process(es)"
        )
    loader = DataLoader(
        seeded,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        # own generator: creating an iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(config.seed),
    )
    return loader, sampler, seeded


def build_val_loader(
    dataset: Dataset, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """The evaluation loader of this process: samples ``rank, rank + world_size, ...``."""
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=pad_collate,
        generator=torch.Generator(),
    )


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of different sizes: pad bottom/right to the largest (image 0 = the mean,
    labels 255, ``valid_mask`` False)."""
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    fills = {"image": 0.0, "image_raw": 0.0, "label": 255, "mask": 255, "valid_mask": False}
    batch: dict[str, Any] = {}
    for key, value in samples[0].items():
        if key in fills:
            padded = []
            for sample in samples:
                tensor = sample[key]
                pad = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
                if tensor.dtype == torch.bool:
                    tensor = F.pad(tensor.to(torch.uint8), pad, value=0).bool()
                else:
                    tensor = F.pad(tensor, pad, value=fills[key])
                padded.append(tensor)
            batch[key] = torch.stack(padded)
        elif isinstance(value, torch.Tensor):
            batch[key] = torch.stack([s[key] for s in samples])
        else:
            batch[key] = [s[key] for s in samples]
    return batch
