"""``weakseg scribbles ...``: convert, simulate, shorten scribbles and report their statistics.

    weakseg scribbles convert-xml XML_DIR OUT_DIR [--width 3] [--skip-bad]
    weakseg scribbles simulate MASK_DIR OUT_DIR [--seed 0] [--width 2] [--skip-bad]
    weakseg scribbles shorten IN_DIR OUT_DIR --ratio R [--mask-dir DIR] [--skip-bad]
    weakseg scribbles stats ROOT --split NAME [--json] [--skip-bad]

Bad files stop the command with a one-line error naming them (exit status 2), or, with
``--skip-bad``, are reported on stderr and skipped. No command writes over its inputs: an
``OUT_DIR`` that is ``IN_DIR`` (``MASK_DIR``, ``--mask-dir``) is refused, and so are two inputs
that would write the same ``<stem>.png`` (``a.png`` and ``a.bmp``), before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from weakseg.cli._common import add_subcommands, log_data_to_stderr
from weakseg.errors import ConfigError, DataError, WeaksegError

# numpy and the data modules are imported by the subcommands, so that --help stays light.

_LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "scribbles",
        help="convert, simulate, shorten scribbles; dataset statistics",
        description="Scribble tools: convert ScribbleSup XML, simulate scribbles from masks, "
        "shorten them, report labeled fractions.",
    )
    commands = add_subcommands(parser, "scribbles_command")

    convert = _folders(
        commands, "convert-xml", "XML_DIR", "rasterize ScribbleSup XML annotations to label PNGs"
    )
    convert.add_argument("--width", type=int, default=3, help="stroke width in px (default 3)")
    _optional_path(
        convert,
        "--classes",
        "class names file, one per line in id order (default: the 21 VOC names)",
    )
    _finish(convert, run_convert, "files")

    simulate = _folders(commands, "simulate", "MASK_DIR", "simulate scribbles from full masks")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--width", type=int, default=2, help="stroke width in px (default 2)")
    simulate.add_argument(
        "--erosion",
        type=float,
        default=0.15,
        help="eroded fraction of each object's inscribed radius (default 0.15)",
    )
    _finish(simulate, run_simulate, "files")

    shorten = _folders(commands, "shorten", "IN_DIR", "shorten scribbles to a length ratio")
    shorten.add_argument(
        "--ratio", type=float, required=True, help="kept ratio in [0, 1]; 0 = clicks"
    )
    _optional_path(
        shorten,
        "--mask-dir",
        "full masks (same file names) to place the centres deepest inside the objects",
    )
    _finish(shorten, run_shorten, "files")

    stats = commands.add_parser("stats", help="labeled fraction per class of a folder dataset")
    stats.add_argument("root", type=Path, metavar="ROOT")
    stats.add_argument("--split", required=True, help="split name (splits/NAME.txt)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    _finish(stats, run_stats, "samples")
    return parser


def _folders(
    commands: argparse._SubParsersAction, name: str, source: str, summary: str
) -> argparse.ArgumentParser:
    """A subcommand reading the folder ``source`` (its metavar) and writing ``OUT_DIR``."""
    command = commands.add_parser(name, help=summary)
    command.add_argument(source.lower(), type=Path, metavar=source)
    command.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    return command


def _optional_path(command: argparse.ArgumentParser, flag: str, summary: str) -> None:
    """An optional ``flag PATH`` (default ``None``)."""
    command.add_argument(flag, type=Path, default=None, help=summary)


def _finish(
    command: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], what: str
) -> None:
    """``--skip-bad`` (of bad ``what``) and the guarded entry point ``run``."""
    command.add_argument("--skip-bad", action="store_true", help=f"report and skip bad {what}")
    command.set_defaults(func=_guarded(run))


def _guarded(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Let the command line report errors as one line (exit status 2): a ``ValueError`` of the
    scribble functions (a bad ``--ratio``, ``--width``...) becomes a :class:`ConfigError`."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "skip_bad", False):
            log_data_to_stderr()
        try:
            return command(args)
        except WeaksegError:
            raise
        except ValueError as exc:
            raise ConfigError(f"scribbles {args.scribbles_command}: {exc}") from exc

    return run


def _label_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataError(f"folder not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in _LABEL_SUFFIXES)
    if not files:
        raise DataError(f"no label image ({', '.join(_LABEL_SUFFIXES)}) in {directory}")
    return files


def _check_outputs(files: list[Path], out_dir: Path, *inputs: Path | None) -> None:
    """Refuse, before anything is written, to write ``out_dir/<stem>.png`` for ``files`` when
    ``out_dir`` is one of the input folders ``inputs`` (it would replace them) or when two
    files share a stem (their outputs would replace each other)."""
    target = out_dir.resolve()
    for folder in inputs:
        if folder is not None and folder.resolve() == target:
            raise DataError(
                f"OUT_DIR {out_dir} is the input folder {folder}: its files would be replaced",
                hint="give another output folder",
            )
    owners: dict[str, Path] = {}
    for path in files:
        other = owners.setdefault(path.stem, path)
        if other is not path:
            raise DataError(
                f"{other} and {path} would both be written to {out_dir / (path.stem + '.png')}",
                hint="keep one of them, or rename one",
            )


def _skip(args: argparse.Namespace, exc: DataError) -> None:
    if not args.skip_bad:
        raise exc
    logging.getLogger("weakseg.data").warning("skipping: %s", exc)


def run_convert(args: argparse.Namespace) -> int:
    from weakseg.data.xml_scribbles import VOC_CLASSES, convert_xml_dir

    names: tuple[str, ...] | list[str] = VOC_CLASSES
    if args.classes is not None:
        from weakseg.data.folder import read_classes

        names = read_classes(args.classes)
    converted, problems = convert_xml_dir(
        args.xml_dir, args.out_dir, names, width=args.width, skip_bad=args.skip_bad
    )
    print(f"converted {converted} files to {args.out_dir}" + _skipped(len(problems)))
    return 0


def _skipped(count: int) -> str:
    return f" ({count} bad files skipped)" if count else ""


def run_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from weakseg.data.io import read_label, write_label
    from weakseg.data.scribbles import simulate_scribbles

    files = _label_files(args.mask_dir)
    _check_outputs(files, args.out_dir, args.mask_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = bad = 0
    for index, path in enumerate(files):
        try:
            mask = read_label(path, "mask")
        except DataError as exc:
            _skip(args, exc)
            bad += 1
            continue
        rng = np.random.default_rng([args.seed, index])
        scribbles = simulate_scribbles(mask, width=args.width, erosion=args.erosion, seed=rng)
        write_label(args.out_dir / f"{path.stem}.png", scribbles)
        written += 1
    print(f"wrote {written} scribble files to {args.out_dir}" + _skipped(bad))
    return 0


def run_shorten(args: argparse.Namespace) -> int:
    from weakseg.data.io import read_label, write_label
    from weakseg.data.scribbles import shorten_scribbles

    if not 0.0 <= args.ratio <= 1.0:
        raise ConfigError(f"--ratio must be in [0, 1], got {args.ratio}")
    files = _label_files(args.in_dir)
    _check_outputs(files, args.out_dir, args.in_dir, args.mask_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = bad = 0
    for path in files:
        try:
            scribbles = read_label(path, "scribble")
            mask = None
            if args.mask_dir is not None:
                mask_path = args.mask_dir / f"{path.stem}.png"
                mask = read_label(mask_path, "mask")
                if mask.shape != scribbles.shape:
                    raise DataError(
                        f"size mismatch: scribble {path} is {scribbles.shape[1]}x"
                        f"{scribbles.shape[0]} (WxH) but mask {mask_path} is "
                        f"{mask.shape[1]}x{mask.shape[0]}"
                    )
        except DataError as exc:
            _skip(args, exc)
            bad += 1
            continue
        write_label(
            args.out_dir / f"{path.stem}.png", shorten_scribbles(scribbles, args.ratio, mask=mask)
        )
        written += 1
    print(f"wrote {written} shortened scribble files to {args.out_dir}" + _skipped(bad))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from weakseg.data.folder import FolderDataset
    from weakseg.data.scribbles import ScribbleStats

    dataset = FolderDataset(args.root, args.split, skip_bad=args.skip_bad)
    stats = ScribbleStats(dataset.num_classes, dataset.class_names)
    bad = 0
    for index in range(len(dataset)):
        try:
            _, scribbles, mask = dataset.load(index)
        except DataError as exc:
            _skip(args, exc)
            bad += 1
            continue
        stats.update(scribbles, mask)
    if args.json:
        print(json.dumps(stats.summary(), indent=2))
    else:
        print(f"{args.root} split {args.split!r}" + _skipped(bad))
        print(stats.format())
    return 0
