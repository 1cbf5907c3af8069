"""``weakseg data check ROOT``: what each split of a folder dataset holds, and every problem.

Per split: ids, slices (volumes), image shapes, voxel spacings, intensity range, how many ids
have scribbles / masks and what the split can therefore serve (scribble training, evaluation),
the class ids present, the labeled (scribbled) fraction, every problem with its file, and the
volumes that share identical images (within a split they weigh twice in a per-volume mean;
across splits an evaluation sees training images). Exit status 1 when there is a problem,
0 otherwise (usable in CI); identical images are reported, not counted as problems.

Example::

    weakseg data check ../shared/data/acdc-scribble
    weakseg data check data/my_mri --json report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from weakseg.cli._common import add_command

_SHOWN = 8  # shapes / spacings / problems printed per split before "... and N more"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "data", "dataset tools: check a folder dataset", __doc__)
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    summary = "report counts, shapes, spacings, classes, labeled fraction and problems"
    check = add_command(commands, "check", summary, __doc__)
    check.add_argument("root", help="the dataset folder (images/, splits/, classes.txt ...)")
    check.add_argument(
        "--slice-axis", type=int, default=None, help="volumes: axis to slice (default: auto)"
    )
    check.add_argument("--json", default=None, metavar="PATH", help="also write a JSON report")
    check.set_defaults(func=run_check)
    return parser


def _top(counter: Any, name: Any) -> str:
    items = counter.most_common()
    shown = ", ".join(f"{name(k)} ({v})" for k, v in items[:_SHOWN])
    return shown + (f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def format_report(report: Any) -> str:
    """The lines of one :class:`~weakseg.data.check.SplitReport`."""
    if report.volumetric:
        head = f"{report.ids} ids (volume files), {report.slices} 2D slices"
    else:
        head = f"{report.ids} ids (2D images) in {report.volumes} volumes by id pattern"
    lines = [f"split {report.name}: {head}"]
    if report.shapes:
        lines.append(f"  shapes: {_top(report.shapes, lambda k: 'x'.join(map(str, k)))}")
        spacing = _top(
            report.spacings, lambda k: "unknown" if k is None else "x".join(f"{s:g}" for s in k)
        )
        lines.append(f"  spacing (mm): {spacing}")
    if report.intensity is not None:
        low, high = report.intensity
        note = "" if 0 <= low and high <= 255 else "  (outside 0-255: set intensity_percentiles)"
        lines.append(f"  intensity: {low:g} .. {high:g}{note}")
    for role in ("scribble", "mask"):
        classes = ", ".join(map(str, sorted(report.classes[role]))) or "-"
        lines.append(
            f"  {role}s: {report.files[role]} of {report.ids} ids, class ids present: {classes}"
        )
    fraction = report.labeled_fraction
    if fraction is not None:
        lines.append(f"  labeled fraction (scribbles): {100 * fraction:.2f}% of the pixels")
    lines.append(f"  usable for: {', '.join(report.usable_for()) or 'nothing (see problems)'}")
    if report.duplicates:
        lines.append(f"  identical images, pixel for pixel ({len(report.duplicates)} groups):")
        lines += [f"    {duplicate}" for duplicate in report.duplicates[:_SHOWN]]
        if len(report.duplicates) > _SHOWN:
            lines.append(f"    ... and {len(report.duplicates) - _SHOWN} more (see --json)")
    if report.problems:
        lines.append(f"  problems ({len(report.problems)}):")
        lines += [f"    {problem}" for problem in report.problems[:_SHOWN]]
        if len(report.problems) > _SHOWN:
            lines.append(f"    ... and {len(report.problems) - _SHOWN} more (see --json)")
    else:
        lines.append("  problems: none")
    return "\n".join(lines)


def run_check(args: argparse.Namespace) -> int:
    from weakseg.data.check import check_dataset

    reports = check_dataset(args.root, slice_axis=args.slice_axis)
    print("\n".join(format_report(report) for report in reports))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if any(report.problems for report in reports) else 0
