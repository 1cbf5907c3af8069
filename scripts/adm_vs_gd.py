"""DenseCRF-ADM against gradient descent on the dense CRF loss (the paper's Fig. 3 / Sec. 3).

Trains the two recipes (by default ``configs/synthetic_gd.yaml`` and
``configs/synthetic_adm.yaml``: same data, network, epochs, seed and CRF bandwidths) through
:func:`weakseg.engine.train.train`, then measures on one fixed set of training images (the first
``--images`` of the training split, full size, no augmentation, network in eval mode):

- ``R(S)``: the dense CRF loss ``sum_k S_k' W (1 - S_k) / 1'W1`` of the network's softmax, per
  image, with the exact O(N^2) Gaussian (no lattice approximation) and the recipes' common
  ``sigma_rgb`` / ``sigma_xy``, averaged over the images; the same quantity for both runs;
- pCE on the scribbles, the regularized loss pCE + λ R(S) that both optimize (λ = the GD
  run's weight) and mIoU against the full masks of those images;

and prints them with the validation mIoU of the last epoch and the last epoch's mean of the
logged ``dense_crf_value`` (the same R(S), but on augmented crops in training mode). Runs go
to ``--out/<name>``; a finished run is not trained again (``resume=auto``).

    python scripts/adm_vs_gd.py                      # about 10 min per run on 2 CPU cores
    python scripts/adm_vs_gd.py --set epochs=1 --images 20 --out runs/adm_vs_gd_quick
    python scripts/adm_vs_gd.py --pce                # also a pCE-only run, for reference
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from weakseg.data import eval_transforms
from weakseg.data.transforms import IMAGENET_MEAN
from weakseg.engine.config import ConfigError, TrainConfig, load_config
from weakseg.engine.loaders import build_dataset
from weakseg.engine.metrics import ConfusionMatrix
from weakseg.engine.predict import load_trained_model
from weakseg.engine.train import train
from weakseg.losses import dense_crf_loss, partial_cross_entropy

# Keys that may differ between the recipes; everything else must match for a fair comparison.
_MAY_DIFFER = {"losses", "output_dir", "resume"}


def bandwidths(config: TrainConfig) -> tuple[float, float]:
    """``(sigma_rgb, sigma_xy)`` of the dense CRF loss a recipe optimizes (GD or ADM)."""
    for name in ("dense_crf", "densecrf_adm"):
        if name in config.losses:
            params = config.losses[name]
            default_xy = 80.0 if name == "dense_crf" else 100.0  # the modules' defaults
            return float(params.get("sigma_rgb", 15.0)), float(params.get("sigma_xy", default_xy))
    raise ConfigError("the recipe has neither losses.dense_crf nor losses.densecrf_adm")


@torch.no_grad()
def measure(
    checkpoint: Path, config: TrainConfig, images: int, sigma_rgb: float, sigma_xy: float
) -> dict[str, float]:
    """R(S), pCE and mIoU of a checkpoint on the first ``images`` training images."""
    model, _ = load_trained_model(checkpoint)
    mean = tuple(config.mean or IMAGENET_MEAN)
    dataset = build_dataset(config, config.train_split, "scribbles", eval_transforms(mean=mean))
    confusion = ConfusionMatrix(len(dataset.class_names))
    crf, pce = [], []
    for index in range(min(images, len(dataset))):
        sample = dataset[index]
        logits = model(sample["image"][None]).float()  # (1, K, h, w)
        size = sample["label"].shape
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        value = dense_crf_loss(
            sample["image_raw"][None],
            probs,
            sample["valid_mask"][None],
            sigma_rgb=sigma_rgb,
            sigma_xy=sigma_xy,
            normalization="affinity",
            backend="exact",
        )
        crf.append(float(value))
        pce.append(float(partial_cross_entropy(logits, sample["label"][None])))
        confusion.update(probs.argmax(dim=1), sample["mask"][None])
    return {
        "R(S)": sum(crf) / len(crf),
        "pCE": sum(pce) / len(pce),
        "train mIoU": float(confusion.summary(dataset.class_names)["miou"]),
    }


def last_epoch(run: Path) -> dict[str, Any]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {
        "val mIoU": records[-1].get("val", {}).get("miou"),
        "logged R(S)": records[-1]["train"].get("dense_crf_value"),
        "train time": sum(r["time"] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gd", default="configs/synthetic_gd.yaml", help="gradient descent")
    parser.add_argument("--adm", default="configs/synthetic_adm.yaml", help="DenseCRF-ADM")
    parser.add_argument("--pce", action="store_true", help="also a pCE-only run (GD, no CRF)")
    parser.add_argument("--out", type=Path, default=Path("runs/adm_vs_gd"))
    parser.add_argument("--images", type=int, default=100, help="training images measured")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a key of both recipes (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()

    recipes = {"GD": (args.gd, []), "ADM": (args.adm, [])}
    if args.pce:
        recipes["pCE only"] = (args.gd, ["losses={}"])
    configs = {
        name: load_config(path, [*args.overrides, *extra, f"output_dir={args.out / slug(name)}"])
        for name, (path, extra) in recipes.items()
    }
    gd, adm = configs["GD"].to_dict(), configs["ADM"].to_dict()
    differ = sorted(k for k in gd if gd[k] != adm[k] and k not in _MAY_DIFFER)
    if differ:
        raise ConfigError(f"{args.gd} and {args.adm} differ in {', '.join(differ)}")
    sigma = bandwidths(configs["GD"])
    weight = float(configs["GD"].losses["dense_crf"].get("weight", 1.0))  # lambda
    if bandwidths(configs["ADM"]) != sigma:
        raise ConfigError(
            f"the recipes' CRF bandwidths differ: {sigma} vs {bandwidths(configs['ADM'])}"
        )

    rows = {}
    for name, config in configs.items():
        config.resume = "auto"
        start = time.perf_counter()
        train(config)
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        run = Path(config.output_dir)
        rows[name] = measure(run / "checkpoint.pth", config, args.images, *sigma) | last_epoch(run)
        rows[name]["pCE + λR(S)"] = rows[name]["pCE"] + weight * rows[name]["R(S)"]

    columns = ["R(S)", "logged R(S)", "pCE", "pCE + λR(S)", "train mIoU", "val mIoU", "train time"]
    print()
    print(
        f"Dense CRF loss R(S) = sum_k S_k' W (1 - S_k) / 1'W1 (sigma_rgb={sigma[0]:g}, "
        f"sigma_xy={sigma[1]:g}, exact Gaussian) of the trained networks on the first "
        f"{args.images} training images; {configs['GD'].epochs} epochs, seed {configs['GD'].seed}; "
        f"λ = {weight:g} (the GD weight)."
    )
    print("| method | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [_cell(row[c], "s" if c == "train time" else "") for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


def slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f} {unit}" if unit else f"{value:.4f}"


if __name__ == "__main__":
    main()
