"""weakseg.engine.loaders: reproducible epochs, shards, mid-epoch starts, padding collate."""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset

from weakseg.engine.loaders import EpochSeeded, ShardedSampler, pad_collate


def test_sharded_sampler_epochs_shards_and_start() -> None:
    sampler = ShardedSampler(10, seed=5)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0, start=4)
    assert list(sampler) == first[4:] and len(sampler) == 6
    shards = [ShardedSampler(10, 3, rank, seed=5) for rank in range(3)]
    indices = [list(s) for s in shards]
    assert all(len(i) == 4 for i in indices)  # padded by wrapping to 12
    assert set().union(*map(set, indices)) == set(range(10))


class _Random(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return {"a": random.random(), "t": torch.rand(1)}


def test_epoch_seeded_is_pure_and_restores_global_state() -> None:
    data = EpochSeeded(_Random(), seed=3)
    random.seed(0)
    torch.manual_seed(0)
    first = data[2]
    after = (random.random(), torch.rand(1))
    random.seed(0)
    torch.manual_seed(0)
    again = data[2]
    assert (random.random(), torch.rand(1)) == after  # callers' generators untouched
    assert first["a"] == again["a"] and torch.equal(first["t"], again["t"])
    data.set_epoch(1)
    assert data[2]["a"] != first["a"]


def test_pad_collate_pads_with_ignore_and_invalid() -> None:
    samples = [
        {
            "image": torch.ones(1, h, w),
            "image_raw": torch.ones(1, h, w),
            "mask": torch.zeros(h, w, dtype=torch.int64),
            "valid_mask": torch.ones(h, w, dtype=torch.bool),
            "tags": torch.ones(2, dtype=torch.bool),
            "id": f"s{h}",
        }
        for h, w in ((2, 3), (3, 2))
    ]
    batch = pad_collate(samples)
    assert batch["image"].shape == (2, 1, 3, 3) and batch["id"] == ["s2", "s3"]
    assert batch["mask"][0, 2].tolist() == [255, 255, 255]
    assert batch["valid_mask"].sum().item() == 12
    assert batch["tags"].shape == (2, 2)
