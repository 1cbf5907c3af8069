"""Where a trained model's errors are: within a band around the true mask boundaries, or elsewhere.

Evaluates checkpoints written by ``weakseg train --config configs/synthetic.yaml`` on the
synthetic validation set (the same seed rule as the training engine) and prints the error rate
in a band of ``--band`` pixels around the ground-truth boundaries and in the rest of the image.

    python scripts/boundary_errors.py runs/pce/checkpoint.pth runs/crf/checkpoint.pth
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from weakseg.data import SyntheticDataset
from weakseg.engine.metrics import boundary_band
from weakseg.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--band", type=int, default=2, help="band width in pixels")
    args = parser.parse_args()
    for path in args.checkpoints:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        config = checkpoint["args"]
        dataset = SyntheticDataset(
            config["synthetic_val"], config["synthetic_size"], seed=config["seed"] * 2 + 1
        )
        model = build_model(config["model"], dataset.num_classes)
        model.load_state_dict(checkpoint["model"])
        model.eval()
        counts = np.zeros((2, 2))  # [in band, elsewhere] x [errors, pixels]
        for sample in dataset:
            with torch.no_grad():
                prediction = model(sample["image"][None]).argmax(1)[0].numpy()
            mask = sample["mask"].numpy()
            band = boundary_band(mask, args.band)
            wrong = prediction != mask
            counts[0] += wrong[band].sum(), band.sum()
            counts[1] += wrong[~band].sum(), (~band).sum()
        share = counts[0, 1] / counts[:, 1].sum()
        print(
            f"{path}: error rate within {args.band} px of a boundary "
            f"{counts[0, 0] / counts[0, 1]:.3f} ({share:.0%} of pixels), "
            f"elsewhere {counts[1, 0] / counts[1, 1]:.3f}"
        )


if __name__ == "__main__":
    main()
