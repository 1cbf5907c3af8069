"""Loss curves of ``weakseg train`` runs, drawn with PIL: one panel per term, one line per run.

A run folder's ``losses.jsonl`` holds one JSON line every ``log_every`` iterations,
``{"iteration", "epoch", "lr", <term>: value}`` (the terms of
:func:`weakseg.engine.train.compute_loss`: ``pce``, each regularizer's weighted value, ``loss``).
Runs without it fall back to ``metrics.jsonl``: one line per epoch, whose ``"train"`` holds the
epoch's mean of each term, placed at the epoch's last iteration. A resumed run may log an
iteration twice; the later line wins.

Several runs on one panel compare optimizers or losses, e.g. the dense CRF term of an ADM run
and of a gradient-descent run (Tang et al., ECCV 2018, Fig. 3); a run that lacks a term is left
out of that term's panel.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from weakseg.data.io import DataError
from weakseg.viz.render import BACKGROUND, GAP, MARGIN, TEXT, Font, font

__all__ = [
    "LOSS_LOG",
    "METRICS_LOG",
    "RUN_COLOURS",
    "LossLog",
    "curves_size",
    "nice_ticks",
    "read_loss_log",
    "render_curves",
    "run_labels",
    "smooth",
]

LOSS_LOG = "losses.jsonl"
METRICS_LOG = "metrics.jsonl"
# Okabe & Ito's colour-blind-safe colours, then gray and black.
RUN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (0, 0, 0),
)
_NOT_TERMS = ("iteration", "epoch", "time")

_PANEL_WIDTH, _PANEL_HEIGHT = 480, 300
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 78, 16, 26, 44  # plot area inside a panel
_TITLE = 24
_LEGEND_LINE = 18
_GRID = (225, 225, 225)
_FRAME = (110, 110, 110)
_MARKERS_UP_TO = 40  # points per line drawn as dots as well (epoch means: few points)


@dataclasses.dataclass(frozen=True)
class LossLog:
    """The logged loss terms of one run.

    Attributes:
        path: the file read (``losses.jsonl`` or ``metrics.jsonl``).
        per_epoch: True for ``metrics.jsonl`` (epoch means).
        series: term -> ``(iterations [N], values [N])``, float64, increasing iterations;
            ``"lr"`` is one of them.
    """

    path: Path
    per_epoch: bool
    series: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def terms(self) -> list[str]:
        """The loss terms, in the log's order (``lr`` excluded)."""
        return [term for term in self.series if term != "lr"]


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of a JSON-lines file."""
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a last line without its newline: still being written
                continue
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        iteration = record.get("iteration") if isinstance(record, dict) else None
        if isinstance(iteration, bool) or not isinstance(iteration, int | float):
            raise DataError(f"{path}, line {number}: expected a JSON object with an 'iteration'")
        records.append((number, record))
    if not records:
        raise DataError(f"{path} holds no records")
    return records


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_loss_log(run_dir: str | Path) -> LossLog:
    """Read the loss terms of a run folder: ``losses.jsonl``, else ``metrics.jsonl``.

    Raises:
        FileNotFoundError: no such folder, or neither file in it.
        DataError: a file that cannot be read, a line that is not a JSON object with an
            ``iteration`` (the file and line are named), a file without records.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    per_epoch = not (run_dir / LOSS_LOG).is_file()
    path = run_dir / (METRICS_LOG if per_epoch else LOSS_LOG)
    if not path.is_file():
        raise FileNotFoundError(f"no {LOSS_LOG} or {METRICS_LOG} in run folder {run_dir}")
    points: dict[str, dict[float, float]] = {}  # term -> iteration -> value (later lines win)
    for number, record in _records(path):
        values = record
        if per_epoch:
            values = record.get("train")
            if not isinstance(values, dict):
                raise DataError(f"{path}, line {number}: no 'train' object of loss terms")
            values = {**values, "lr": record.get("lr")}
        for term, value in values.items():
            if term not in _NOT_TERMS and _is_number(value):
                points.setdefault(term, {})[float(record["iteration"])] = float(value)
    series = {}
    for term, by_iteration in points.items():
        iterations = np.array(sorted(by_iteration), dtype=np.float64)
        series[term] = (iterations, np.array([by_iteration[i] for i in iterations]))
    return LossLog(path, per_epoch, series)


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Legend names of the runs: their folder names, with as many parent folders as it takes
    to tell them apart (``a/run`` and ``b/run``)."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in run_dirs]  # the same folder given twice


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean: ``out[i] = mean(values[max(0, i - window + 1) : i + 1])``."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1:
        return values
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (sums[end] - sums[start]) / (end - start)


def nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values in ``[low, high]``, spaced 1, 2 or 5 x 10^n."""
    if not high > low:
        return np.array([low])
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return np.arange(first, last + 1) * step


def _tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        value = 0.0
    if 1e-4 <= step and max(abs(value), step) < 1e6:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        return f"{value:.{decimals}f}"
    return f"{value:.3g}"


def curves_size(num_terms: int, num_runs: int) -> tuple[int, int]:
    """``(width, height)`` in px of :func:`render_curves` for that many panels and runs."""
    columns = min(num_terms, 2)
    rows = math.ceil(num_terms / columns)
    width = 2 * MARGIN + columns * _PANEL_WIDTH + (columns - 1) * GAP
    height = 2 * MARGIN + _TITLE + rows * (_PANEL_HEIGHT + GAP) + GAP + num_runs * _LEGEND_LINE
    return width, height


def _span(low: float, high: float) -> tuple[float, float]:
    """A data range widened by 5% each side (or around a single value)."""
    if high > low:
        pad = 0.05 * (high - low)
        return low - pad, high + pad
    pad = abs(low) * 0.05 or 1.0
    return low - pad, high + pad


def _vertical_text(figure: Image.Image, x: int, y_center: int, text: str, font: Font) -> None:
    """``text`` rotated a quarter turn counter-clockwise, its left edge at x, centred on y."""
    width = int(ImageDraw.Draw(figure).textlength(text, font=font)) + 2
    label = Image.new("L", (width, 16), 0)
    ImageDraw.Draw(label).text((1, 1), text, fill=255, font=font)
    label = label.rotate(90, expand=True)
    top = y_center - label.height // 2
    figure.paste(TEXT, (x, top, x + label.width, top + label.height), label)


def _draw_panel(
    figure: Image.Image,
    origin: tuple[int, int],
    term: str,
    lines: Sequence[tuple[tuple[int, int, int], np.ndarray, np.ndarray]],
    fonts: tuple[Font, Font],
) -> None:
    """One term's axes at ``origin`` with its ``(colour, iterations, values)`` lines."""
    draw = ImageDraw.Draw(figure)
    large, small = fonts
    x0, y0 = origin
    left, top = x0 + _PLOT_LEFT, y0 + _PLOT_TOP
    right, bottom = x0 + _PANEL_WIDTH - _PLOT_RIGHT, y0 + _PANEL_HEIGHT - _PLOT_BOTTOM
    draw.text((left, y0 + 4), term, fill=TEXT, font=large)
    xs = np.concatenate([x for _, x, _ in lines])
    ys = np.concatenate([y for _, _, y in lines])
    x_low, x_high = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    if x_high <= x_low:
        x_low, x_high = _span(x_low, x_high)
    y_low, y_high = _span(float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)

    def px(x: np.ndarray) -> np.ndarray:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def py(y: np.ndarray) -> np.ndarray:
        return bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    for axis, (low, high) in enumerate(((x_low, x_high), (y_low, y_high))):
        ticks = nice_ticks(low, high)
        step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(float(ticks[0])) or 1.0
        for tick in ticks:
            label = _tick_label(float(tick), step)
            length = draw.textlength(label, font=small)
            if axis == 0:
                x = float(px(tick))
                draw.line((x, top, x, bottom), fill=_GRID)
                draw.line((x, bottom, x, bottom + 4), fill=_FRAME)
                draw.text((x - length / 2, bottom + 6), label, fill=TEXT, font=small)
            else:
                y = float(py(tick))
                draw.line((left, y, right, y), fill=_GRID)
                draw.line((left - 4, y, left, y), fill=_FRAME)
                draw.text((left - 7 - length, y - 7), label, fill=TEXT, font=small)
    draw.rectangle((left, top, right, bottom), outline=_FRAME)
    x_label = "iteration"
    x_label_width = draw.textlength(x_label, font=small)
    draw.text(((left + right - x_label_width) / 2, bottom + 24), x_label, fill=TEXT, font=small)
    y_label = "learning rate" if term == "lr" else "value"
    _vertical_text(figure, x0 + 2, (top + bottom) // 2, y_label, small)

    for colour, x, y in lines:
        points = list(zip(px(x).tolist(), py(y).tolist(), strict=True))
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        if len(points) <= _MARKERS_UP_TO:
            for u, v in points:
                draw.ellipse((u - 2.5, v - 2.5, u + 2.5, v + 2.5), fill=colour)


def render_curves(
    logs: Mapping[str, LossLog],
    terms: Sequence[str] | None = None,
    *,
    smooth_window: int = 1,
    title: str | None = None,
) -> Image.Image:
    """Draw each loss term over the iterations: one panel per term, one line per run.

    Args:
        logs: legend label -> the run's log (e.g. from :func:`read_loss_log` and
            :func:`run_labels`), in the legend's order; run i is drawn in ``RUN_COLOURS[i]``.
        terms: the panels' terms (``"lr"`` allowed); default every loss term of any run.
        smooth_window: trailing running mean over this many logged points (1: raw values).
        title: the line at the top (default: says what is plotted).

    Returns:
        An RGB image of :func:`curves_size` ``(len(terms), len(logs))``.

    Raises:
        ValueError: no run, no term, a term that no run logs, ``smooth_window < 1``.
    """
    if not logs:
        raise ValueError("no run to plot")
    if smooth_window < 1:
        raise ValueError(f"smooth_window must be >= 1, got {smooth_window}")
    found = list(dict.fromkeys(term for log in logs.values() for term in log.terms))
    if terms is None:
        terms = found
    if not terms:
        raise ValueError("the runs' logs hold no loss term")
    for term in terms:
        if not any(term in log.series for log in logs.values()):
            raise ValueError(
                f"no run logs the term {term!r}; the runs log: {', '.join(found) or 'nothing'}"
            )
    figure = Image.new("RGB", curves_size(len(terms), len(logs)), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    large, small = font(13), font(11)
    if title is None:
        smoothing = f", running mean of {smooth_window} points" if smooth_window > 1 else ""
        title = f"loss terms over training iterations{smoothing}"
    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=large)
    colours = {label: RUN_COLOURS[i % len(RUN_COLOURS)] for i, label in enumerate(logs)}
    columns = min(len(terms), 2)
    for index, term in enumerate(terms):
        row, column = divmod(index, columns)
        origin = (
            MARGIN + column * (_PANEL_WIDTH + GAP),
            MARGIN + _TITLE + row * (_PANEL_HEIGHT + GAP),
        )
        lines = []
        for label, log in logs.items():
            if term not in log.series:
                continue
            x, y = log.series[term]
            y = smooth(y, smooth_window)
            finite = np.isfinite(y)
            lines.append((colours[label], x[finite], y[finite]))
        _draw_panel(figure, origin, term, lines, (large, small))

    rows = math.ceil(len(terms) / columns)
    y = MARGIN + _TITLE + rows * (_PANEL_HEIGHT + GAP) + GAP
    for label, log in logs.items():
        source = f"{log.path.name}: epoch means" if log.per_epoch else log.path.name
        draw.line((MARGIN, y + 7, MARGIN + 24, y + 7), fill=colours[label], width=3)
        draw.text((MARGIN + 32, y), f"{label}  ({source})", fill=TEXT, font=small)
        y += _LEGEND_LINE
    return figure
