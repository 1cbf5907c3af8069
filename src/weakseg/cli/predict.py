"""``weakseg predict CHECKPOINT INPUT... -o OUTDIR``: segment image files or folders.

For each image writes ``OUTDIR/<name>.png`` (class ids as a palette PNG, PASCAL VOC colours) and
``OUTDIR/<name>_overlay.png`` (the classes blended over the image; ``--no-overlay`` to skip).
``<name>`` is the image's stem, or ``<stem>_<extension>`` when two inputs share a stem
(``a.jpg`` -> ``a_jpg.png``, ``a.png`` -> ``a_png.png``). Nothing is written over an input: an
output folder where a prediction would replace an input image is refused before any work.

A file that cannot be read stops the command with an error naming it; with ``--skip-bad`` it is
reported on stderr and skipped, and the exit status is non-zero only when no image could be
predicted.

Example::

    weakseg predict runs/acdc/best.pth ../shared/data/acdc-scribble/images -o predictions --crf
"""

from __future__ import annotations

import argparse
import sys

from weakseg.cli.eval import add_inference_arguments, crf_arguments
from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from weakseg.engine.device import resolve_device
from weakseg.engine.predict import (
    check_outputs,
    check_scales,
    find_images,
    load_trained_model,
    output_names,
    predict_file,
    write_prediction,
)
from weakseg.errors import DataError


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
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="report unreadable images on stderr and go on (exit status 2 only if none worked)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked is checked before the checkpoint is loaded.
    device = resolve_device(args.device)
    scales = check_scales(args.scales)
    crf = crf_arguments(args)
    paths = find_images(args.inputs)
    with_overlay = not args.no_overlay
    names = output_names(paths, with_overlay)
    output_dir = check_outputs(args.output_dir, paths, names, with_overlay)
    model, checkpoint = load_trained_model(args.checkpoint, device)
    config = checkpoint["args"]
    skipped: list[tuple[str, DataError]] = []
    for path, name in zip(paths, names, strict=True):
        try:
            raw, label = predict_file(
                model,
                path,
                in_channels=checkpoint["model_config"]["in_channels"],
                mean=config.get("mean") or IMAGENET_MEAN,
                std=config.get("std") or IMAGENET_STD,
                device=device,
                scales=scales,
                flip=args.flip,
                crf=crf,
            )
        except DataError as error:
            if not args.skip_bad:
                if error.hint:
                    raise
                raise DataError(error.args[0], hint="pass --skip-bad to skip such files") from error
            print(f"skipped: {error}", file=sys.stderr)
            skipped.append((str(path), error))
            continue
        written = write_prediction(output_dir, name, raw, label, with_overlay)
        print(f"{path} -> {written[0]}")
    predicted = len(paths) - len(skipped)
    if skipped:
        print(
            f"predicted {predicted} of {len(paths)} images into {output_dir}; skipped "
            f"{len(skipped)}: {', '.join(p for p, _ in skipped)}",
            file=sys.stderr,
        )
    if predicted == 0:
        raise DataError(
            f"no image could be predicted: all {len(paths)} inputs were skipped",
            hint="see the messages above",
        )
    return 0
