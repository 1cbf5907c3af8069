"""``weakseg segment IMAGE --scribbles S.png -o MASK.png``: segment one image from its scribbles.

IMAGE is any image Pillow reads (gray stays gray, everything else becomes RGB, 0-255).
S.png holds class ids ``0..K-1`` per pixel and 255 for unlabeled pixels; MASK.png receives the
class ids of every pixel (8-bit, same size).
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
import torch
from PIL import Image

from weakseg.segment import SEGMENT_INITS, SEGMENT_LOSSES, segment_image

# The command's defaults are segment_image's, so that the two cannot drift apart.
_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(segment_image).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment one image from scribbles (pCE + regularized loss)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="input image (PNG, JPEG, ...)")
    parser.add_argument("--scribbles", required=True, help="label PNG: ids 0..K-1, 255 unlabeled")
    parser.add_argument("-o", "--output", required=True, help="output mask PNG")
    parser.add_argument("--loss", choices=SEGMENT_LOSSES, default=_DEFAULTS["loss"])
    parser.add_argument(
        "--weight", type=float, default=_DEFAULTS["weight"], help="regularizer weight lambda"
    )
    parser.add_argument(
        "--gamma", type=float, default=_DEFAULTS["gamma"], help="normalized-cut weight (kernel cut)"
    )
    parser.add_argument("--sigma-rgb", type=float, default=_DEFAULTS["sigma_rgb"])
    parser.add_argument(
        "--sigma-xy", type=float, default=_DEFAULTS["sigma_xy"], help="in pixels of IMAGE"
    )
    parser.add_argument("--num-classes", type=int, default=_DEFAULTS["num_classes"])
    parser.add_argument(
        "--steps", type=int, default=_DEFAULTS["n_steps"], help="gradient-descent iterations"
    )
    parser.add_argument("--lr", type=float, default=_DEFAULTS["lr"])
    parser.add_argument(
        "--init", choices=SEGMENT_INITS, default=_DEFAULTS["init"], help="starting logits"
    )
    parser.add_argument("--scale-factor", type=float, default=_DEFAULTS["scale_factor"])
    parser.add_argument(
        "--backend", choices=("auto", "lattice", "exact"), default=_DEFAULTS["backend"]
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(func=run)
    return parser


def _load_image(path: str) -> torch.Tensor:
    image = Image.open(path)
    image = image.convert("L") if image.mode in ("L", "I", "I;16", "F") else image.convert("RGB")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))  # (C, H, W)


def run(args: argparse.Namespace) -> int:
    image = _load_image(args.image).to(args.device)
    scribbles = torch.from_numpy(np.asarray(Image.open(args.scribbles), dtype=np.int64))
    if scribbles.ndim != 2:
        raise SystemExit(f"--scribbles must be a single-channel label PNG, got {scribbles.shape}")
    start = time.perf_counter()
    labels = segment_image(
        image,
        scribbles.to(args.device),
        loss=args.loss,
        weight=args.weight,
        gamma=args.gamma,
        sigma_rgb=args.sigma_rgb,
        sigma_xy=args.sigma_xy,
        num_classes=args.num_classes,
        n_steps=args.steps,
        lr=args.lr,
        init=args.init,
        scale_factor=args.scale_factor,
        backend=args.backend,
    )
    elapsed = time.perf_counter() - start
    Image.fromarray(labels.cpu().numpy().astype(np.uint8)).save(args.output)
    print(f"wrote {args.output} ({labels.shape[1]}x{labels.shape[0]}, {elapsed:.2f} s)")
    return 0
