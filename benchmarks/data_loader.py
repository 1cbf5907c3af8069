"""Loader throughput on the real ACDC scribble data set (images/s).

Reads ``../shared/data/acdc-scribble`` (or ``--root``) with the training transforms (random scale,
crop with padding, flip, jitter), batch 8, ``--workers`` worker processes (2 by default), and
prints images/s over ``--images`` samples after one warm-up batch.

    python benchmarks/data_loader.py [--root PATH] [--workers 2] [--images 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from weakseg.data import FolderDataset
from weakseg.data.transforms import train_transforms

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc-scribble"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--crop", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = FolderDataset(args.root, args.split, transform=train_transforms(args.crop))
    subset = Subset(data, range(min(args.images, len(data))))
    loader = DataLoader(subset, batch_size=8, num_workers=args.workers, shuffle=False)
    iterator = iter(loader)
    next(iterator)  # warm-up: workers start
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch["id"])
    rate = count / (time.perf_counter() - start)
    print(
        f"{args.root.name} {args.split}: {rate:.0f} images/s ({args.workers} workers, batch 8, "
        f"crop {args.crop}, {count} images)"
    )


if __name__ == "__main__":
    main()
