"""``weakseg predict CHECKPOINT INPUT... -o OUTDIR``: segment image files or folders.

For each image writes ``OUTDIR/<name>.png`` (class ids as a palette PNG, PASCAL VOC colours) and
``OUTDIR/<name>_overlay.png`` (the classes blended over the image; ``--no-overlay`` to skip).
For each volume file (``.nii``, ``.nii.gz``, ``.h5``) writes ``OUTDIR/<name>.nii.gz``: the
class ids of every slice along the training's slice axis (and intensity scaling), as NIfTI
with the input's affine and header (``--lcc``: the largest 3D component per class).
``<name>`` is the input's stem (``a.nii.gz`` -> ``a``), or ``<stem>_<extension>`` when two
inputs share a stem (``a.jpg`` -> ``a_jpg.png``, ``a.png`` -> ``a_png.png``). Nothing is
written over an input: an output folder where a prediction would replace an input image is
refused before any work.

A file that cannot be read stops the command with an error naming it; with ``--skip-bad`` it is
reported on stderr and skipped, and the exit status is non-zero only when no image could be
predicted.

Example::

    weakseg predict runs/acdc/best.pth ../shared/data/acdc-scribble/images -o predictions --crf
    weakseg predict runs/mri/best.pth scans/case_007.nii.gz -o predictions --lcc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from weakseg.cli._common import add_command
from weakseg.cli.eval import add_inference_arguments, crf_arguments
from weakseg.errors import DataError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    summary = "segment images with a checkpoint: palette masks and overlays"
    parser = add_command(subparsers, "predict", summary, __doc__)
    add_inference_arguments(parser)
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the masks")
    parser.add_argument("--no-overlay", action="store_true", help="write the masks only")
    parser.add_argument(
        "--lcc", action="store_true", help="volumes: keep the largest component per class"
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="report unreadable images on stderr and go on (exit status 2 only if none worked)",
    )
    parser.set_defaults(func=run)
    return parser


def _predict(model: Any, path: Path, name: str, output_dir: Path, settings: dict[str, Any]) -> Path:
    """Predict one input into ``output_dir``; returns the mask (or NIfTI) written."""
    from weakseg.data.volumes import is_volume_file
    from weakseg.engine.predict import predict_file, write_prediction

    common = {k: settings[k] for k in ("in_channels", "mean", "std", "device", "scales", "flip")}
    if is_volume_file(path):
        from weakseg.engine.predict_volume import predict_volume, write_volume_prediction

        volume, labels = predict_volume(
            model,
            path,
            **common,
            crf=settings["crf"],
            slice_axis=settings["slice_axis"],
            intensity_percentiles=settings["intensity_percentiles"],
            lcc=settings["lcc"],
        )
        return write_volume_prediction(output_dir, volume, labels, f"{name}.nii.gz")
    raw, label = predict_file(model, path, **common, crf=settings["crf"])
    return write_prediction(output_dir, name, raw, label, settings["with_overlay"])[0]


def run(args: argparse.Namespace) -> int:
    from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from weakseg.engine.device import resolve_device
    from weakseg.engine.predict import (
        check_outputs,
        check_scales,
        find_images,
        load_trained_model,
        output_names,
    )

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
    settings = {
        "in_channels": checkpoint["model_config"]["in_channels"],
        "mean": config.get("mean") or IMAGENET_MEAN,
        "std": config.get("std") or IMAGENET_STD,
        "device": device,
        "scales": scales,
        "flip": args.flip,
        "crf": crf,
        "slice_axis": config.get("slice_axis"),
        "intensity_percentiles": config.get("intensity_percentiles"),
        "lcc": args.lcc,
        "with_overlay": with_overlay,
    }
    skipped: list[tuple[str, DataError]] = []
    for path, name in zip(paths, names, strict=True):
        try:
            written = _predict(model, path, name, output_dir, settings)
        except DataError as error:
            if not args.skip_bad:
                if error.hint:
                    raise
                raise DataError(error.args[0], hint="pass --skip-bad to skip such files") from error
            print(f"skipped: {error}", file=sys.stderr)
            skipped.append((str(path), error))
            continue
        print(f"{path} -> {written}")
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
