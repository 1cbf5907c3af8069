"""``weakseg viz gradients | curves``: the paper's figures for your own images and runs.

``gradients`` draws Fig. 1 of Tang et al. (ECCV 2018) for any image: the image, its scribbles,
the segmentation S, and for each regularizer the gradient dR/dS_k (red: negative, the loss asks
for more of class k there; yellow: positive), one row per class k. S is the softmax output of a
``weakseg train`` checkpoint, or without ``--checkpoint`` a logit field fitted to the scribbles
by partial cross-entropy alone (S = the scribbles, about uniform elsewhere: the start of
training, when the regularizer is the only signal on the unlabeled pixels).

``curves`` plots each loss term over the iterations from the runs' ``losses.jsonl`` (or, for runs
without it, ``metrics.jsonl``: epoch means), one panel per term and one line per run, e.g. the
dense CRF term of an ADM run against a gradient-descent run (the paper's Fig. 3).

Examples::

    weakseg viz gradients photo.jpg --scribbles photo_scribbles.png -o fig1.png
    weakseg viz gradients photo.jpg --scribbles s.png --checkpoint runs/voc/best.pth \\
        --losses dense_crf kernel_cut --classes 0 12 -o fig1.png
    weakseg viz curves runs/gd runs/adm --terms pce dense_crf --smooth 20 -o curves.png

Missing or unreadable inputs end the command with a one-line error naming the file (status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weakseg.cli._common import add_command, add_subcommands
from weakseg.errors import DataError, WeaksegError
from weakseg.viz import GRADIENT_LOSSES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``weakseg viz`` and its subcommands."""
    summary = "figures: regularizer gradients dR/dS (Fig. 1), loss curves of runs"
    parser = add_command(subparsers, "viz", summary, __doc__)
    commands = add_subcommands(parser, "viz_command")

    _add_gradients(commands)
    _add_curves(commands)
    return parser


def _add_gradients(commands: argparse._SubParsersAction) -> None:
    """``weakseg viz gradients``."""
    gradients = commands.add_parser(
        "gradients",
        help="image, scribbles, S and each regularizer's gradient dR/dS_k, per class",
        description="The paper's Fig. 1 for IMAGE: see 'weakseg viz --help'.",
    )
    gradients.add_argument("image", help="input image (gray or RGB, any PIL format)")
    gradients.add_argument(
        "--scribbles", required=True, help="label PNG of IMAGE's size: ids 0..K-1, 255 unlabeled"
    )
    gradients.add_argument(
        "--checkpoint", default=None, help="a 'weakseg train' checkpoint: S = its softmax output"
    )
    gradients.add_argument(
        "--losses",
        nargs="+",
        choices=GRADIENT_LOSSES,
        default=["dense_crf", "normalized_cut", "kernel_cut"],
        help="regularizers, one column each (default: %(default)s)",
    )
    gradients.add_argument("--sigma-rgb", type=float, default=15.0, help="(default: %(default)s)")
    gradients.add_argument(
        "--sigma-xy", type=float, default=80.0, help="in pixels (default: %(default)s)"
    )
    gradients.add_argument(
        "--gamma", type=float, default=0.1, help="kernel cut = CRF + gamma NC (default: 0.1)"
    )
    gradients.add_argument(
        "--raw",
        action="store_true",
        help="show dR/dS_k as autograd gives it (default: minus its mean over the classes, the "
        "part a softmax output feels; see weakseg.viz.gradients.regularizer_gradients)",
    )
    gradients.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=None,
        help="class ids of the rows (default: those scribbled or most probable somewhere)",
    )
    gradients.add_argument(
        "--num-classes", type=int, default=None, help="K without --checkpoint (default: max id+1)"
    )
    gradients.add_argument(
        "--steps", type=int, default=60, help="Adam steps of the pCE fit without --checkpoint"
    )
    gradients.add_argument("--lr", type=float, default=0.25, help="Adam learning rate of the fit")
    gradients.add_argument(
        "--backend",
        choices=("lattice", "exact"),
        default="lattice",
        help="affinity filter: lattice O(N), exact O(N^2) (default: lattice)",
    )
    gradients.add_argument(
        "--panel-size", type=int, default=256, help="px of a panel's longer side (default: 256)"
    )
    gradients.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    gradients.add_argument("-o", "--output", required=True, help="output figure (PNG)")
    gradients.set_defaults(func=_reporting_errors, viz_run=run_gradients)


def _add_curves(commands: argparse._SubParsersAction) -> None:
    """``weakseg viz curves``."""
    curves = commands.add_parser(
        "curves",
        help="loss terms over iterations of one or more runs (losses.jsonl / metrics.jsonl)",
        description="Loss curves of 'weakseg train' runs: see 'weakseg viz --help'.",
    )
    curves.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of runs")
    curves.add_argument(
        "--terms", nargs="+", default=None, help="terms, one panel each (default: all; 'lr' too)"
    )
    curves.add_argument(
        "--smooth", type=int, default=1, help="running mean over N logged points (default: 1)"
    )
    curves.add_argument("--title", default=None, help="title line (default: what is plotted)")
    curves.add_argument("-o", "--output", required=True, help="output figure (PNG)")
    curves.set_defaults(func=_reporting_errors, viz_run=run_curves)


def _reporting_errors(args: argparse.Namespace) -> int:
    """Run the subcommand; a bad input is a :class:`WeaksegError`, which ``weakseg`` prints as
    one line (exit status 2)."""
    try:
        return args.viz_run(args)
    except WeaksegError:
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise WeaksegError(f"weakseg viz {args.viz_command}: {exc}") from exc


def _probs_of_checkpoint(args: argparse.Namespace, scribbles, device):
    """S = the softmax output of ``args.checkpoint`` on the image; its class names."""
    import torch

    from weakseg.data.io import check_label_values, read_image
    from weakseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from weakseg.engine.predict import load_trained_model
    from weakseg.viz.gradients import network_probs

    if args.num_classes is not None:
        raise ValueError("--num-classes is for runs without --checkpoint (it has its own K)")
    model, checkpoint = load_trained_model(args.checkpoint, device)
    model_config, config = checkpoint["model_config"], checkpoint.get("args", {})
    num_classes = int(model_config["num_classes"])
    class_names = list(checkpoint.get("class_names") or map(str, range(num_classes)))
    check_label_values(scribbles, num_classes, Path(args.scribbles), "scribbles")
    network_image = torch.from_numpy(read_image(Path(args.image), model_config["in_channels"]))
    mean, std = config.get("mean") or IMAGENET_MEAN, config.get("std") or IMAGENET_STD
    probs = network_probs(model, network_image, mean, std)
    return probs, class_names, f"S = the softmax output of {Path(args.checkpoint).name}"


def _probs_of_scribbles(args: argparse.Namespace, image_raw, scribbles):
    """S = a logit field fitted to the scribbles by pCE alone; class names ``0..K-1``."""
    import torch

    from weakseg.data.io import check_label_values
    from weakseg.viz.gradients import scribble_probs

    scribbles_path = Path(args.scribbles)
    labeled = scribbles != 255
    if not labeled.any():
        raise DataError(
            f"scribbles file {scribbles_path} has no labeled pixel (every value is 255): "
            "nothing to fit S to (give --checkpoint to use a network's output)"
        )
    num_classes = args.num_classes or max(int(scribbles[labeled].max()) + 1, 2)
    if num_classes < 2:
        raise ValueError(f"--num-classes must be >= 2, got {num_classes}")
    check_label_values(scribbles, num_classes, scribbles_path, "scribbles")
    labels = torch.from_numpy(scribbles).long().to(image_raw.device)
    probs = scribble_probs(image_raw, labels, num_classes, n_steps=args.steps, lr=args.lr)
    source = (
        "S = softmax of a logit field fitted to the scribbles by partial cross-entropy "
        f"alone ({args.steps} Adam steps)"
    )
    return probs, [str(k) for k in range(num_classes)], source


def run_gradients(args: argparse.Namespace) -> int:
    """Write the gradient figure of ``args.image``; returns 0."""
    import torch

    from weakseg.data.io import check_same_size, read_image, read_label
    from weakseg.engine.device import resolve_device
    from weakseg.viz.gradients import (
        gradient_regularizers,
        regularizer_gradients,
        regularizer_title,
        render_gradient_figure,
        shown_classes,
    )

    image_path, scribbles_path, output = Path(args.image), Path(args.scribbles), Path(args.output)
    if args.panel_size < 16:
        raise ValueError(f"--panel-size must be >= 16, got {args.panel_size}")
    image = read_image(image_path)  # (C, H, W) 0-255, the file's own channels
    scribbles = read_label(scribbles_path, "scribbles")  # (H, W)
    check_same_size(image.shape[1:], scribbles.shape, image_path, scribbles_path, "scribbles")
    device = resolve_device(args.device)
    image_raw = torch.from_numpy(image).to(device)
    if args.checkpoint is not None:
        probs, class_names, source = _probs_of_checkpoint(args, scribbles, device)
    else:
        probs, class_names, source = _probs_of_scribbles(args, image_raw, scribbles)
    num_classes = len(class_names)
    regularizers = gradient_regularizers(
        args.losses,
        sigma_rgb=args.sigma_rgb,
        sigma_xy=args.sigma_xy,
        gamma=args.gamma,
        backend=args.backend,
    )
    gradients = regularizer_gradients(
        regularizers, image_raw[None], probs[None], tangent=not args.raw
    )
    probs_np = probs.cpu().numpy()
    classes = args.classes or shown_classes(scribbles, probs_np)
    for k in classes:
        if not 0 <= k < num_classes:
            raise ValueError(f"--classes: {k} is not a class id (0..{num_classes - 1})")
    height, width = scribbles.shape
    shown = "raw dR/dS_k" if args.raw else "shown: dR/dS_k minus its mean over the K classes"
    title = (
        f"dR/dS_k of each regularizer R at S (Tang et al., ECCV 2018, Fig. 1): "
        f"{image_path.name}, {width}x{height}\n{source}\n"
        f"sigma_rgb = {args.sigma_rgb:g}, sigma_xy = {args.sigma_xy:g} px, affinity "
        f"normalization; {shown}"
    )
    figure = render_gradient_figure(
        image,
        scribbles,
        probs_np,
        {regularizer_title(n, regularizers[n]): g.cpu().numpy() for n, g in gradients.items()},
        class_names,
        classes,
        title,
        args.panel_size,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(output)
    rows = ", ".join(class_names[k] for k in classes)
    print(f"wrote {output} ({figure.width}x{figure.height}): classes {rows}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    """Write the loss curves of ``args.runs``; returns 0."""
    from weakseg.viz.curves import read_loss_log, render_curves, run_labels

    output = Path(args.output)
    logs = {
        label: read_loss_log(run)
        for label, run in zip(run_labels(args.runs), args.runs, strict=True)
    }
    figure = render_curves(logs, args.terms, smooth_window=args.smooth, title=args.title)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(output)
    sources = ", ".join(f"{label}: {log.path.name}" for label, log in logs.items())
    print(f"wrote {output} ({figure.width}x{figure.height}) from {sources}")
    return 0
