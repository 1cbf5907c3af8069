"""Training-step time with and without the dense CRF loss (issue 6, throughput).

One optimizer step of a U-Net (forward, pCE [+ dense CRF on full-resolution probabilities],
backward, AdamW) on a batch of 8 generated 256x256 scribble-annotated images, on the CPU, with
the engine's own ``train_step``. Prints the median step time of each variant and the
regularizer's share.

    python benchmarks/train_step.py [--threads 2] [--steps 5] [--size 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from weakseg.data import SyntheticDataset
from weakseg.engine.config import TrainConfig, build_regularizers
from weakseg.engine.train import build_optimizer, train_step
from weakseg.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = SyntheticDataset(args.batch, args.size, seed=0)
    batch = next(iter(DataLoader(data, batch_size=args.batch)))
    device = torch.device("cpu")
    variants = {
        "pCE only": {},
        "pCE + dense CRF": {"dense_crf": {"weight": 1.0, "sigma_rgb": 15.0, "sigma_xy": 80.0}},
    }
    print(
        f"U-Net, batch {args.batch}, {args.size}x{args.size}, CPU, {torch.get_num_threads()} "
        f"threads, median of {args.steps} steps after one warm-up"
    )
    times = {}
    for name, losses in variants.items():
        torch.manual_seed(0)
        config = TrainConfig(model="unet", losses=losses)
        model = build_model("unet", data.num_classes)
        optimizer = build_optimizer(model, config)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        regularizers = build_regularizers(config.losses)
        train_step(model, [batch], regularizers, optimizer, scaler, config, device)  # warm-up
        samples = []
        for _ in range(args.steps):
            start = time.perf_counter()
            train_step(model, [batch], regularizers, optimizer, scaler, config, device)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples) * 1e3
        print(f"{name:>18}: {times[name]:7.0f} ms per step")
    extra = times["pCE + dense CRF"] - times["pCE only"]
    print(
        f"dense CRF loss: +{extra:.0f} ms per step, "
        f"{extra / times['pCE + dense CRF']:.0%} of the regularized step"
    )


if __name__ == "__main__":
    main()
