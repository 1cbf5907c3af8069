"""``weakseg predict CHECKPOINT INPUT... -o OUTDIR``: segment image files or folders.

For each image writes ``OUTDIR/<name>.png`` (class ids as a palette PNG, PASCAL VOC colours) and
``OUTDIR/<name>_overlay.png`` (the classes blended over the image; ``--no-overlay`` to skip).

Example::

    weakseg predict runs/acdc/best.pth ../shared/data/acdc-scribble/images -o predictions --crf
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weakseg.cli.eval import add_inference_arguments, crf_arguments, resolve_device
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.engine.predict import find_images, load_trained_model, predict_file, write_prediction


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a checkpoint: palette masks and overlays",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_inference_arguments(parser)
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the masks")
    parser.add_argument("--no-overlay", action="store_true", help="write the masks only")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    paths = find_images(args.inputs)
    model, checkpoint = load_trained_model(args.checkpoint, device)
    config = checkpoint["args"]
    output_dir = Path(args.output_dir)
    crf = crf_arguments(args)
    for path in paths:
        raw, label = predict_file(
            model,
            path,
            in_channels=checkpoint["model_config"]["in_channels"],
            mean=config.get("mean") or IMAGENET_MEAN,
            std=config.get("std") or IMAGENET_STD,
            device=device,
            scales=args.scales,
            flip=args.flip,
            crf=crf,
        )
        written = write_prediction(output_dir, path.stem, raw, label, not args.no_overlay)
        print(f"{path} -> {written[0]}")
    return 0
