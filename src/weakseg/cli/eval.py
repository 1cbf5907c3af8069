"""``weakseg eval CHECKPOINT``: evaluate a trained network against full masks.

Reports, per slice (pixels pooled over the split): mIoU, per-class IoU, pixel accuracy, Dice per
class and mean Dice over the foreground classes (all but class 0); and per volume, the protocol
of the medical literature: 3D Dice and HD95 per class (HD95 in mm from the voxel spacing, in
voxels without one), the mean over the foreground classes averaged over volumes
(:mod:`weakseg.engine.volume_metrics`, which also states what HD95 is for an empty prediction or
ground truth). Slices of volume files know their volume; 2D slice files are grouped by an id
pattern (``--volume-pattern``, default ``<volume>_slice_<n>``, e.g. ACDC's
``patient001_frame01_slice_3`` -> ``patient001_frame01``; an id it does not match is a volume of
its own). Prints a table and writes a JSON report (keys ``mean_dice_3d``, ``dice_3d``,
``mean_hd95_3d``, ``hd95_3d``, ``per_volume``, besides the per-slice ``miou``, ``dice`` ...).

The dataset is the checkpoint's validation data unless ``--dataset`` / ``--data-root`` /
``--split`` say otherwise. Optional multi-scale and flip averaging (``--scales 0.75 1 1.25
--flip``), post-processing by dense CRF (``--crf``, DeepLab's mean-field parameters) and by the
largest connected component per class of each volume (``--lcc``).

Example::

    weakseg eval runs/acdc/best.pth --split val --lcc --output runs/acdc/eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from weakseg.cli._common import add_command
from weakseg.errors import ConfigError

_DATASETS = ("folder", "synthetic", "voc")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    summary = "evaluate a checkpoint: mIoU, IoU, pixel accuracy, Dice"
    parser = add_command(subparsers, "eval", summary, __doc__)
    add_inference_arguments(parser)
    parser.add_argument("--dataset", choices=_DATASETS, default=None, help="default: checkpoint's")
    parser.add_argument("--data-root", default=None, help="default: the checkpoint's")
    parser.add_argument("--split", default=None, help="default: the checkpoint's val_split")
    parser.add_argument(
        "--lcc", action="store_true", help="keep the largest connected component per class"
    )
    parser.add_argument(
        "--volume-pattern",
        default=None,
        metavar="REGEX",
        help="groups 2D slice ids into volumes: the group 'volume' (else the first), optional "
        "group 'slice' (default: the config's volume_pattern, else '<volume>_slice_<n>')",
    )
    parser.add_argument("--no-hd95", action="store_true", help="skip HD95 (Dice only; faster)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("-o", "--output", default=None, help="JSON report (default: none)")
    parser.set_defaults(func=run)
    return parser


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``eval`` and ``predict``."""
    parser.add_argument("checkpoint", help="a checkpoint of 'weakseg train' (.pth)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[1.0], help="input scales to average"
    )
    parser.add_argument("--flip", action="store_true", help="also average the flipped input")
    parser.add_argument("--crf", action="store_true", help="dense CRF post-processing")
    parser.add_argument("--crf-iterations", type=int, default=10, help="mean-field iterations")


def crf_arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.crf:
        return None
    if args.crf_iterations < 0:
        raise ConfigError(f"--crf-iterations must be >= 0, got {args.crf_iterations}")
    return {"n_iter": args.crf_iterations}


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The per-class IoU / Dice table and the summary lines of a metrics report, then the
    per-volume Dice / HD95 table when the report has one."""
    fmt = _percent
    width = max([len("pixel accuracy"), len("mean (foreground)"), *map(len, report["iou"])])
    lines = [f"per slice{'':<{width - 9}}  IoU %   Dice %"]
    for name in report["iou"]:
        lines.append(f"{name:<{width}} {fmt(report['iou'][name])}  {fmt(report['dice'][name])}")
    lines.append(f"{'mIoU':<{width}} {fmt(report['miou'])}")
    lines.append(f"{'mean Dice (fg)':<{width}} {'':6}  {fmt(report['mean_dice'])}")
    lines.append(f"{'pixel accuracy':<{width}} {fmt(report['pixel_accuracy'])}")
    if "dice_3d" in report:
        unit = report.get("hd95_unit", "mm")
        lines.append("")
        lines.append(
            f"{'per volume (' + str(report['volumes']) + ')':<{width}} Dice %  HD95 {unit}"
        )

        def distance(value: float | None) -> str:
            return "    n/a" if value is None else f"{value:7.2f}"

        for name in report["dice_3d"]:
            lines.append(
                f"{name:<{width}} {fmt(report['dice_3d'][name])} "
                f"{distance(report['hd95_3d'][name])}"
            )
        lines.append(
            f"{'mean (foreground)':<{width}} {fmt(report['mean_dice_3d'])} "
            f"{distance(report['mean_hd95_3d'])}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from weakseg.data.volumes import check_volume_pattern
    from weakseg.engine.config import TrainConfig
    from weakseg.engine.device import resolve_device
    from weakseg.engine.evaluate import evaluate
    from weakseg.engine.loaders import build_val_loader
    from weakseg.engine.predict import load_trained_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.volume_pattern is not None:
        try:
            check_volume_pattern(args.volume_pattern)
        except ValueError as exc:
            raise ConfigError(f"--volume-pattern: {exc}") from None
    device = resolve_device(args.device)
    model, checkpoint = load_trained_model(args.checkpoint, device)
    values = dict(checkpoint["args"])
    if args.dataset is not None:
        values["dataset"] = args.dataset
    if args.data_root is not None:
        values["data_root"] = args.data_root
    if args.split is not None:
        values["val_split"] = args.split
    if not values.get("val_split"):
        raise ConfigError("no split to evaluate: pass --split")
    values.update(resume=None, pretrained=None, num_workers=args.num_workers)
    config = TrainConfig.from_dict(values, f"{args.checkpoint} + command line")
    dataset = eval_dataset(config)
    class_names = list(checkpoint["class_names"])
    if list(dataset.class_names) != class_names:
        raise ConfigError(
            f"the dataset's classes {list(dataset.class_names)} differ from the "
            f"checkpoint's {class_names}"
        )
    loader = build_val_loader(dataset, args.batch_size, args.num_workers)
    pattern = args.volume_pattern or getattr(config, "volume_pattern", None)
    result = evaluate(
        model,
        loader,
        len(class_names),
        device,
        scales=args.scales,
        flip=args.flip,
        crf=crf_arguments(args),
        progress=True,
        lcc=args.lcc,
        compute_hd95=not args.no_hd95,
        volume_pattern=pattern,
    )
    report = result.summary(class_names)
    report.update(
        checkpoint=str(args.checkpoint),
        split=config.val_split,
        images=len(dataset),
        scales=list(args.scales),
        flip=args.flip,
        crf=args.crf,
        lcc=args.lcc,
        volume_pattern=pattern,
    )
    print(format_table(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


def eval_dataset(config: Any):
    """The split ``config.val_split`` with full masks, for evaluation: a folder split needs its
    masks (a missing one is a DataError naming it) and no scribbles."""
    from weakseg.data import FolderDataset, eval_transforms
    from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from weakseg.engine.loaders import build_dataset

    mean = tuple(config.mean or IMAGENET_MEAN)
    if config.dataset == "folder":
        return FolderDataset(
            config.data_root,
            config.val_split,
            "unlabeled",
            eval_transforms(mean=mean),
            load_masks=True,
            skip_bad=config.skip_bad,
            channels=config.channels,
            mean=mean,
            std=tuple(config.std or IMAGENET_STD),
            slice_axis=getattr(config, "slice_axis", None),
            intensity_percentiles=getattr(config, "intensity_percentiles", None),
        )
    dataset = build_dataset(config, config.val_split, "unlabeled", eval_transforms(mean=mean))
    if not getattr(dataset, "has_masks", False):
        raise ConfigError(f"split {config.val_split!r} has no full masks to evaluate against")
    return dataset
