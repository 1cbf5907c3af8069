"""``weakseg segment IMAGE --scribbles S.png -o MASK.png``: segment one image from its scribbles.

IMAGE is any image Pillow reads (gray stays gray, everything else becomes RGB, 0-255; 16-bit
images are rescaled to 0-255), or a volume (``.nii``, ``.nii.gz``, ``.h5``; intensities scaled
to 0-255 between their 0.5 and 99.5 percentiles) segmented in 3D with its voxel spacing.
S holds class ids ``0..K-1`` per pixel and 255 for unlabeled pixels (a PNG, or a volume file
for a volume); MASK receives the class ids of every pixel (8-bit PNG, or NIfTI for a volume).

The annotation loop: segment, look at MASK, add strokes to S, and run again with
``--previous MASK``: the new result starts from the last one, with fewer full-resolution
updates (about 0.7 of a first call's work at 0.15 MP; a fresh command also pays numba's
first-call cost). A one-shot command cannot keep the lattices or the last result between
rounds; in Python, ``weakseg.interactive.InteractiveSegmenter(image)`` keeps them:
``.segment(S)`` once, then ``.refine(S)`` after each round of strokes, about a third of a
first call's work and nearly as accurate as a fresh call with all the strokes (README,
"Interactive segmentation").

Methods (``--method``): ``appearance_crf`` (default; colour models + distance to the
scribbles + dense CRF, coarse-to-fine mean field, see
:mod:`weakseg.interactive.appearance_crf`), or the earlier gradient descent on a free logit
field with one regularized loss (``dense_crf``, ``kernel_cut``, ``normalized_cut``,
``grid_potts``; :func:`weakseg.interactive.logit_field_segmentation`), which imports PyTorch.

Every input is checked before any work: files readable, sizes equal, class ids below
``--num-classes``, at least two classes scribbled, the output writable and not one of the
inputs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from weakseg.errors import ConfigError, DataError

_LOGIT_FIELD = ("dense_crf", "kernel_cut", "normalized_cut", "grid_potts")
METHODS: tuple[str, ...] = ("appearance_crf", *_LOGIT_FIELD)
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".h5", ".hdf5")
# Defaults of the default method, repeated here so that --help costs no import of the method
# (tests check them equal to segment_image's).
DEFAULTS = {
    "sigma_xy": 40.0,
    "sigma_rgb": 13.0,
    "weight": 2.5,
    "grid_weight": 2.0,
    "appearance_weight": 1.0,
    "distance_weight": 0.3,
    "n_outer": 3,
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment one image or volume from scribbles (no network)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="input image (PNG, JPEG, ...) or volume (.nii.gz, .h5)")
    parser.add_argument("--scribbles", required=True, help="label file: ids 0..K-1, 255 unlabeled")
    parser.add_argument("-o", "--output", required=True, help="output mask (PNG, or .nii.gz)")
    parser.add_argument(
        "--previous", default=None, help="the last result (MASK) to refine with new scribbles"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="K (default: max id + 1)")
    parser.add_argument("--method", choices=METHODS, default="appearance_crf")
    parser.add_argument(
        "--sigma-xy", type=float, default=None, help="pixels (default 40; logit field: 3)"
    )
    parser.add_argument("--sigma-rgb", type=float, default=None, help="intensity units (13; 15)")
    parser.add_argument(
        "--weight",
        type=float,
        default=None,
        help="dense CRF weight (2.5, less where classes share colours; logit field: 1)",
    )
    parser.add_argument(
        "--grid-weight", type=float, default=DEFAULTS["grid_weight"],
        help="weight of the contrast-sensitive 8-neighbour term (0 = none)",
    )  # fmt: skip
    parser.add_argument(
        "--appearance-weight", type=float, default=DEFAULTS["appearance_weight"],
        help="weight of the colour log-likelihoods",
    )  # fmt: skip
    parser.add_argument(
        "--distance-weight", type=float, default=DEFAULTS["distance_weight"],
        help="cost of distance to the class's scribbles, per scribble size (0.3, more where "
        "classes share colours)",
    )  # fmt: skip
    parser.add_argument(
        "--outer", type=int, default=DEFAULTS["n_outer"], help="appearance re-estimations"
    )
    logit = parser.add_argument_group("logit-field methods (--method dense_crf etc.)")
    logit.add_argument("--gamma", type=float, default=1.0, help="normalized-cut weight")
    logit.add_argument("--steps", type=int, default=100, help="gradient-descent iterations")
    logit.add_argument("--lr", type=float, default=2.0)
    logit.add_argument("--init", choices=("uniform", "nearest"), default="uniform")
    logit.add_argument("--scale-factor", type=float, default=None)
    logit.add_argument("--backend", choices=("auto", "lattice", "exact"), default="auto")
    logit.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(func=run)
    return parser


def _is_volume(path: str | Path) -> bool:
    return str(path).lower().endswith(_VOLUME_SUFFIXES)


def _check_output(output: Path, inputs: list[Path], volume: bool) -> None:
    """The output must differ from every input and be writable: checked before any work."""
    for path in inputs:
        if output.resolve() == path.resolve():
            raise ConfigError(
                f"output {output} is the input file {path}: it would be overwritten",
                "choose another -o path",
            )
    suffixes = (".nii", ".nii.gz") if volume else (".png",)
    if not str(output).lower().endswith(suffixes):
        raise ConfigError(
            f"output {output} must end in {' or '.join(suffixes)}",
            "masks are written as " + ("NIfTI" if volume else "8-bit PNG"),
        )
    if output.is_dir():
        raise ConfigError(f"output {output} is a directory", "give a file name")
    parent = output.parent if str(output.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output {output} cannot be written: {existing} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise ConfigError(f"output {output} exists and is not writable")


def _read(args: argparse.Namespace):
    """Image ``[C, *spatial]``, scribbles, previous labels (or None), spacing, volume info."""
    image_path, scribble_path = Path(args.image), Path(args.scribbles)
    if _is_volume(image_path):
        from weakseg.data.volumes import read_volume

        volume = read_volume(image_path, "image", percentiles=(0.5, 99.5))
        image = volume.array[None]  # (1, S, H, W)
        scribbles = read_volume(scribble_path, "scribble", axis=volume.axis).array
        previous = None
        if args.previous is not None:
            previous = read_volume(Path(args.previous), "mask", axis=volume.axis).array
        return image, scribbles, previous, volume.spacing, volume
    from weakseg.data.io import read_image, read_label

    image = read_image(image_path)  # (C, H, W) float32 in 0-255
    scribbles = read_label(scribble_path, what="scribbles")
    previous = None
    if args.previous is not None:
        previous = read_label(Path(args.previous), what="previous mask")
    return image, scribbles, previous, None, None


def _check_inputs(args, image, scribbles, previous) -> int:
    """Sizes, class ids, scribbled classes; returns K."""
    from weakseg.interactive.appearance_crf import check_scribbles

    spatial = tuple(image.shape[1:])
    for what, path, labels in [("scribbles", args.scribbles, scribbles)] + (
        [] if previous is None else [("previous mask", args.previous, previous)]
    ):
        if tuple(labels.shape) != spatial:
            raise DataError(
                f"size mismatch: image {args.image} is {'x'.join(map(str, spatial[::-1]))} "
                f"but {what} {path} is {'x'.join(map(str, labels.shape[::-1]))}"
            )
    if args.num_classes is not None and args.num_classes < 2:
        raise ConfigError(f"--num-classes must be >= 2, got {args.num_classes}")
    num_classes = check_scribbles(scribbles, args.num_classes, source=f"scribbles {args.scribbles}")
    if previous is not None and int(previous.max()) >= num_classes:
        raise DataError(
            f"previous mask {args.previous} holds class id {int(previous.max())}, beyond "
            f"num_classes={num_classes}",
            "pass --num-classes, or the mask of an earlier run with these classes",
        )
    return num_classes


def run(args: argparse.Namespace) -> int:
    # Spinning OpenMP threads collapse when another process holds the cores (measured 40x
    # slower per lattice filtering on 2 busy cores): a one-shot command waits passively.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    image_path, scribble_path = Path(args.image), Path(args.scribbles)
    inputs = [image_path, scribble_path] + ([Path(args.previous)] if args.previous else [])
    volume_input = _is_volume(image_path)
    _check_output(Path(args.output), inputs, volume_input)
    if args.method != "appearance_crf" and (volume_input or args.previous):
        raise ConfigError(
            f"--method {args.method} takes 2D images without --previous",
            "use the default --method appearance_crf",
        )
    image, scribbles, previous, spacing, volume = _read(args)
    num_classes = _check_inputs(args, image, scribbles, previous)

    if args.method == "appearance_crf":
        from weakseg.cli._numba_startup import import_numba_without_blas_probe

        import_numba_without_blas_probe()  # ~0.7 s less numba first-call cost (no SciPy)
        from weakseg.interactive.appearance_crf import segment_image

        # The printed seconds: the call alone (numba's first-call loading of its cached
        # kernels included), after the imports, which count as start-up.
        start = time.perf_counter()
        labels = segment_image(
            image,
            scribbles,
            num_classes=num_classes,
            previous=previous,
            spacing=spacing,
            sigma_xy=DEFAULTS["sigma_xy"] if args.sigma_xy is None else args.sigma_xy,
            sigma_rgb=DEFAULTS["sigma_rgb"] if args.sigma_rgb is None else args.sigma_rgb,
            weight=DEFAULTS["weight"] if args.weight is None else args.weight,
            grid_weight=args.grid_weight,
            appearance_weight=args.appearance_weight,
            distance_weight=args.distance_weight,
            n_outer=args.outer,
        )
    else:
        start = time.perf_counter()
        labels = _logit_field(args, image, scribbles, num_classes)
    elapsed = time.perf_counter() - start

    if volume is not None:
        from weakseg.data.volumes import write_label_volume

        write_label_volume(args.output, labels, volume.path, volume.axis)
    else:
        from weakseg.data.io import write_label

        write_label(args.output, labels, palette=False)
    size = "x".join(map(str, labels.shape[::-1]))
    print(f"wrote {args.output} ({size}, {num_classes} classes, {elapsed:.2f} s)")
    return 0


def _logit_field(args: argparse.Namespace, image, scribbles, num_classes: int):
    """The earlier method (PyTorch): gradient descent on a free logit field."""
    import torch

    from weakseg.engine.device import resolve_device
    from weakseg.interactive.logit_field import logit_field_segmentation

    device = resolve_device(args.device)
    try:
        labels = logit_field_segmentation(
            torch.from_numpy(image).to(device),
            torch.from_numpy(scribbles).long().to(device),
            loss=args.method,
            weight=1.0 if args.weight is None else args.weight,
            gamma=args.gamma,
            sigma_rgb=15.0 if args.sigma_rgb is None else args.sigma_rgb,
            sigma_xy=3.0 if args.sigma_xy is None else args.sigma_xy,
            num_classes=num_classes,
            n_steps=args.steps,
            lr=args.lr,
            init=args.init,
            scale_factor=args.scale_factor,
            backend=args.backend,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {args.method}: {exc}") from None
    return labels.cpu().numpy()
