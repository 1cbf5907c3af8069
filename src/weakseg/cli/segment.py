"""``weakseg segment IMAGE --scribbles S.png -o MASK.png``: segment one image from its scribbles.

IMAGE is any image Pillow reads (gray stays gray, everything else becomes RGB, 0-255; 16-bit
images are rescaled to 0-255), read by :func:`weakseg.data.io.read_image`.
S.png holds class ids ``0..K-1`` per pixel and 255 for unlabeled pixels; MASK.png receives the
class ids of every pixel (8-bit, same size).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import torch

from weakseg.data.io import DataError, check_same_size, read_image, read_label, write_label
from weakseg.interactive import SEGMENT_INITS, SEGMENT_LOSSES, segment_image

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


def run(args: argparse.Namespace) -> int:
    try:
        image = read_image(args.image)  # (C, H, W) float32 in 0-255; 16-bit rescaled
        scribbles = read_label(args.scribbles, what="scribbles")  # (H, W) uint8
        check_same_size(
            image.shape[1:], scribbles.shape, Path(args.image), Path(args.scribbles), "scribbles"
        )
        start = time.perf_counter()
        labels = segment_image(
            torch.from_numpy(image).to(args.device),
            torch.from_numpy(scribbles).long().to(args.device),
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
    except (DataError, ValueError, TypeError) as exc:
        print(f"weakseg segment: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    write_label(args.output, labels.cpu().numpy(), palette=False)
    print(f"wrote {args.output} ({labels.shape[1]}x{labels.shape[0]}, {elapsed:.2f} s)")
    return 0
