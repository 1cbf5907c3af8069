"""``weakseg eval CHECKPOINT``: evaluate a trained network against full masks.

Reports mIoU, per-class IoU, pixel accuracy, Dice per class and mean Dice over the foreground
classes (all but class 0), prints a table and writes a JSON report. The dataset is the
checkpoint's validation data unless ``--dataset`` / ``--data-root`` / ``--split`` say otherwise.
Optional multi-scale and flip averaging (``--scales 0.75 1 1.25 --flip``) and dense CRF
post-processing (``--crf``, DeepLab's mean-field parameters).

Example::

    weakseg eval runs/acdc/best.pth --split val --crf --output runs/acdc/eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from weakseg.engine.config import DATASETS, TrainConfig
from weakseg.engine.evaluate import evaluate
from weakseg.engine.loaders import build_val_loader
from weakseg.engine.predict import load_trained_model


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: mIoU, IoU, pixel accuracy, Dice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_inference_arguments(parser)
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="default: checkpoint's")
    parser.add_argument("--data-root", default=None, help="default: the checkpoint's")
    parser.add_argument("--split", default=None, help="default: the checkpoint's val_split")
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but CUDA is not available")
    return device


def crf_arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.crf:
        return None
    if args.crf_iterations < 0:
        raise SystemExit(f"error: --crf-iterations must be >= 0, got {args.crf_iterations}")
    return {"n_iter": args.crf_iterations}


def format_table(report: dict[str, Any]) -> str:
    """The per-class IoU / Dice table and the summary lines of a metrics report."""

    def fmt(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    width = max([len("pixel accuracy"), *map(len, report["iou"])])
    lines = [f"{'class':<{width}}  IoU %   Dice %"]
    for name in report["iou"]:
        lines.append(f"{name:<{width}} {fmt(report['iou'][name])}  {fmt(report['dice'][name])}")
    lines.append(f"{'mIoU':<{width}} {fmt(report['miou'])}")
    lines.append(f"{'mean Dice (fg)':<{width}} {'':6}  {fmt(report['mean_dice'])}")
    lines.append(f"{'pixel accuracy':<{width}} {fmt(report['pixel_accuracy'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
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
        raise SystemExit("error: no split to evaluate: pass --split")
    values.update(resume=None, pretrained=None, num_workers=args.num_workers)
    config = TrainConfig.from_dict(values, f"{args.checkpoint} + command line")
    dataset = _val_dataset(config)
    class_names = list(checkpoint["class_names"])
    if list(dataset.class_names) != class_names:
        raise SystemExit(
            f"error: the dataset's classes {list(dataset.class_names)} differ from the "
            f"checkpoint's {class_names}"
        )
    loader = build_val_loader(dataset, args.batch_size, args.num_workers)
    confusion = evaluate(
        model,
        loader,
        len(class_names),
        device,
        scales=args.scales,
        flip=args.flip,
        crf=crf_arguments(args),
        progress=True,
    )
    report = confusion.summary(class_names)
    report.update(
        checkpoint=str(args.checkpoint),
        split=config.val_split,
        images=len(dataset),
        scales=list(args.scales),
        flip=args.flip,
        crf=args.crf,
    )
    print(format_table(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


def _val_dataset(config: TrainConfig):
    from weakseg.engine.loaders import build_datasets

    # only the validation set is needed; a tiny train split is still built for class names
    _, val, _, _ = build_datasets(config)
    return val
