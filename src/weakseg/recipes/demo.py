"""``weakseg demo``: scribbles alone vs regularized losses vs full masks, on synthetic data.

Four small U-Nets are trained on the generated synthetic data set (:mod:`weakseg.data.synthetic`)
with the same seed, data, schedule and initialization, and differ only in their loss:

1. ``pce``: partial cross-entropy on the scribbles alone (~5% of the pixels labeled);
2. ``dense_crf``: pCE + the dense CRF loss, eq. (4) of Tang et al. (ECCV 2018);
3. ``kernel_cut``: pCE + the kernel cut loss, eq. (6) (dense CRF + gamma * normalized cut);
4. ``full``: cross-entropy on the full masks, the upper bound.

Each is evaluated on the validation images: mIoU, and the pixel error rate within
``band_width`` pixels of the true object boundaries (where scribble-only training errs) and
elsewhere. :func:`run_demo` writes ``results.json``, ``results.md``, ``figure.png`` (image,
scribbles, each model's prediction, ground truth, and the regularizers' gradients dR/dS_k at the
pCE network's output, as Fig. 1 of the paper) and each run's ``checkpoint.pth`` (readable by
``weakseg eval`` / ``weakseg predict``) into the output folder. Nothing is downloaded.

Each run is ``weakseg train``'s own: :func:`weakseg.engine.train.build` then
:func:`~weakseg.engine.train.fit`, with one hook (the shared progress bar) instead of its
per-epoch checkpoints and validation, so that the four runs share one progress bar and the data
is generated once; the checkpoint at the end is :func:`~weakseg.engine.train.save`'s.

Reproducibility: the numbers are bit-identical run to run on one machine for one seed and one
thread count, whatever the environment (``OMP_NUM_THREADS``, an earlier
``torch.set_num_threads``): :func:`run_demo` sets ``threads`` (PyTorch's, which the numba lattice
follows) for its duration and restores the caller's afterwards. Another thread count changes them
(convolution backward passes and the lattice splat sum per-thread partial results), and so do
another CPU instruction set and other torch / numba versions. The README's figures are those of
:data:`DEFAULT_THREADS` threads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from weakseg import __version__
from weakseg.data import SYNTHETIC_CLASSES, SyntheticDataset
from weakseg.engine.config import TrainConfig
from weakseg.engine.loaders import build_datasets, build_val_loader
from weakseg.engine.metrics import ConfusionMatrix, boundary_band
from weakseg.engine.train import Hook, Run, build, fit, save
from weakseg.errors import ConfigError
from weakseg.recipes.demo_runs import AFFINITY, DEFAULT_THREADS, DEMO_RUNS, DemoRun, DemoSettings
from weakseg.viz.gradients import (
    gradient_regularizers,
    regularizer_gradients,
    regularizer_title,
)
from weakseg.viz.render import (
    BACKGROUND,
    GAP,
    MARGIN,
    PANEL,
    TEXT,
    Font,
    draw_class_legend,
    draw_gradient_legend,
    font,
    gradient_rgb,
    label_rgb,
    panel,
    scribble_rgb,
)

__all__ = [
    "DEFAULT_THREADS",
    "DEMO_RUNS",
    "DemoRun",
    "DemoSettings",
    "demo_config",
    "evaluate_run",
    "figure_size",
    "format_table",
    "regularizer_gradients",
    "render_figure",
    "run_demo",
    "train_run",
]


def demo_config(
    run: DemoRun,
    settings: DemoSettings,
    output_dir: str | Path,
    threads: int | None = DEFAULT_THREADS,
) -> TrainConfig:
    """The :class:`TrainConfig` of ``run`` (saved as each checkpoint's ``args``): the recipe that
    ``weakseg train`` would follow, with validation and checkpoints only at the end, on
    ``threads`` CPU threads (``None``: PyTorch's current count)."""
    return TrainConfig.from_dict(
        {
            "dataset": "synthetic",
            "synthetic_train": settings.train_images,
            "synthetic_val": settings.val_images,
            "synthetic_size": settings.image_size,
            "supervision": run.supervision,
            "crop_size": settings.image_size,
            "scale_range": [0.75, 1.5],
            "model": "unet",
            "losses": run.losses,
            "optimizer": "adamw",
            "lr": settings.lr,
            "weight_decay": 1e-4,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "num_workers": 0,  # the synthetic samples are cached in this process
            "device": settings.device,
            "seed": settings.seed,
            "threads": threads,
            "output_dir": str(Path(output_dir) / run.name),
            "val_batch_size": 16,
            "progress": False,
            "tensorboard": False,
        },
        source=f"demo run {run.name!r}",
    )


class _OnStep(Hook):
    """Calls ``on_step(terms)`` after every optimizer step."""

    def __init__(self, on_step: Callable[[dict[str, float]], None]) -> None:
        self.on_step = on_step

    def on_iteration(self, run: Run, terms: dict[str, float]) -> None:
        self.on_step(terms)


def train_run(
    config: TrainConfig,
    datasets: tuple[Dataset, Dataset | None, list[str], int],
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> Run:
    """Train a network as ``weakseg train`` would with ``config`` (no checkpoints, no validation).

    Args:
        config: the run's settings (model, losses, optimizer, epochs, seed...).
        datasets: ``(train_set, val_set, class_names, in_channels)`` of
            :func:`~weakseg.engine.loaders.build_datasets` for ``config``.
        on_step: called after every optimizer step with the step's loss terms.

    Returns:
        The trained :class:`~weakseg.engine.train.Run` (its model in eval mode).
    """
    run = build(config, datasets)
    fit(run, [_OnStep(on_step)] if on_step is not None else [])
    run.model.eval()
    return run


@torch.no_grad()
def evaluate_run(
    model: nn.Module,
    val_set: Dataset,
    class_names: Sequence[str],
    band_width: int = 2,
    batch_size: int = 16,
) -> tuple[dict[str, Any], Tensor]:
    """mIoU, per-class IoU and the error rates near and away from the true boundaries.

    Args:
        model: the network (eval mode).
        val_set: samples with ``image`` and ``mask`` (all of the same size).
        class_names: names of the K classes.
        band_width: boundary band width in px (see :func:`boundary_band`).
        batch_size: evaluation batch size.

    Returns:
        The metrics (``miou``, ``iou``, ``pixel_accuracy``, ``boundary_error``: error rate in the
        band, ``elsewhere_error``: error rate outside it, ``band_share``: fraction of the pixels
        in the band) and the predictions Tensor[N, H, W] (int64, CPU).
    """
    device = next(model.parameters()).device
    confusion = ConfusionMatrix(len(class_names))
    counts = np.zeros((2, 2))  # [in band, elsewhere] x [errors, pixels]
    predictions = []
    for batch in build_val_loader(val_set, batch_size, 0):
        prediction = model(batch["image"].to(device)).argmax(dim=1).cpu()
        confusion.update(prediction, batch["mask"])
        for pred, mask in zip(prediction.numpy(), batch["mask"].numpy(), strict=True):
            band = boundary_band(mask, band_width)
            wrong = pred != mask
            counts[0] += wrong[band].sum(), band.sum()
            counts[1] += wrong[~band].sum(), (~band).sum()
        predictions.append(prediction)
    summary = confusion.summary(class_names)
    rates = counts[:, 0] / np.maximum(counts[:, 1], 1)
    metrics = {
        "miou": summary["miou"],
        "iou": summary["iou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "boundary_error": float(rates[0]),
        "elsewhere_error": float(rates[1]),
        "band_share": float(counts[0, 1] / max(counts[:, 1].sum(), 1)),
    }
    return metrics, torch.cat(predictions)


def format_table(results: Sequence[dict[str, Any]], band_width: int = 2) -> str:
    """The plain-text results table: one line per run."""
    lines = [
        f"{'run':<18} {'val mIoU':>8} {f'error <= {band_width} px of boundary':>27} "
        f"{'error elsewhere':>15} {'train s':>8}"
    ]
    for result in results:
        lines.append(
            f"{result['label']:<18} {_fmt(result['miou']):>8} "
            f"{_fmt(result['boundary_error']):>27} {_fmt(result['elsewhere_error']):>15} "
            f"{result['train_seconds']:>8.0f}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _markdown(
    results: Sequence[dict[str, Any]],
    settings: DemoSettings,
    command: str,
    wall: float,
    threads: int,
) -> str:
    width = settings.band_width
    lines = [
        "# weakseg demo",
        "",
        f"`{command}` (weakseg {__version__}): U-Net trained {settings.epochs} epochs on "
        f"{settings.train_images} generated {settings.image_size}x{settings.image_size} images, "
        f"evaluated on {settings.val_images} others; seed {settings.seed}; "
        f"{threads} CPU threads; {wall:.0f} s in all.",
        "",
        f"| run | val mIoU | error rate within {width} px of a boundary | error rate elsewhere "
        "| losses |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        losses = ", ".join(
            f"{name} {json.dumps(params, separators=(', ', ': '))}"
            for name, params in result["losses"].items()
        )
        lines.append(
            f"| {result['label']} | {_fmt(result['miou'])} | {_fmt(result['boundary_error'])} "
            f"| {_fmt(result['elsewhere_error'])} | {losses or '-'} |"
        )
    lines += ["", "![figure](figure.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The figure (PIL only)

_ROW_LABEL = 76  # left column with the row's description
_TITLE = 36
_HEADER = 32  # column titles (two lines)
_LEGEND = 58
_GRADIENT_COLUMNS = 3  # dense CRF, normalized cut, kernel cut
_FIGURE_COLUMNS = 3 + len(DEMO_RUNS) + _GRADIENT_COLUMNS  # image, scribbles, runs, truth, dR/dS


def figure_size(num_examples: int, num_columns: int = _FIGURE_COLUMNS) -> tuple[int, int]:
    """``(width, height)`` in px of the figure with ``num_examples`` rows."""
    width = 2 * MARGIN + _ROW_LABEL + num_columns * PANEL + (num_columns - 1) * GAP
    height = 2 * MARGIN + _TITLE + _HEADER + num_examples * (PANEL + GAP) + _LEGEND
    return width, height


def render_figure(
    examples: Sequence[dict[str, Any]],
    prediction_titles: Sequence[str],
    gradient_titles: Sequence[str],
    title: str,
    class_names: Sequence[str],
) -> Image.Image:
    """Draw the demo figure: one row per example, one column per panel, a legend below.

    Args:
        examples: one dict per row: ``index`` (the validation image's), ``image`` uint8
            [H, W, 3], ``scribbles`` [H, W] (255 = unlabeled), ``mask`` [H, W], ``predictions``
            (one [H, W] per entry of ``prediction_titles``), ``gradients`` (one [H, W] map
            dR/dS_k per entry of ``gradient_titles``) and ``k`` (the class of the gradients).
        prediction_titles: column titles of the predictions (e.g. ``"pCE only\\nmIoU 0.81"``).
        gradient_titles: column titles of the gradient maps.
        title: the line(s) at the top.
        class_names: names of the classes (legend).

    Returns:
        An RGB image of :func:`figure_size` ``(len(examples), num_columns)``, with
        ``num_columns = 3 + len(prediction_titles) + len(gradient_titles)``.
    """
    titles = [
        "image",
        "scribbles",
        *prediction_titles,
        "ground truth",
        *(f"dR/dS_k: {text}" for text in gradient_titles),
    ]
    figure = Image.new("RGB", figure_size(len(examples), len(titles)), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    large, small = font(13), font(11)
    draw.multiline_text((MARGIN, MARGIN), title, fill=TEXT, font=large, spacing=3)
    top = MARGIN + _TITLE

    def x_of(column: int) -> int:
        return MARGIN + _ROW_LABEL + column * (PANEL + GAP)

    for column, text in enumerate(titles):
        draw.multiline_text((x_of(column), top), text, fill=TEXT, font=small, spacing=2)
    top += _HEADER
    for row, example in enumerate(examples):
        y = top + row * (PANEL + GAP)
        draw.multiline_text(
            (MARGIN, y + PANEL // 2 - 14),
            f"val image {example['index']}\nk = {class_names[example['k']]}",
            fill=TEXT,
            font=small,
            spacing=2,
        )
        outline = boundary_band(example["mask"], 0)
        panels = [
            example["image"],
            scribble_rgb(example["image"], example["scribbles"]),
            *(label_rgb(p, outline) for p in example["predictions"]),
            label_rgb(example["mask"]),
            *(gradient_rgb(g) for g in example["gradients"]),
        ]
        for column, rgb in enumerate(panels):
            figure.paste(panel(rgb), (x_of(column), y))
    _draw_legend(draw, top + len(examples) * (PANEL + GAP) + GAP, class_names, small)
    return figure


def _draw_legend(draw: ImageDraw.ImageDraw, y: int, class_names: Sequence[str], font: Font) -> None:
    x = draw_class_legend(draw, MARGIN, y, class_names, font)
    draw.text(
        (x + 12, y),
        "white line on predictions: the true boundaries",
        fill=TEXT,
        font=font,
    )
    y = draw_gradient_legend(draw, MARGIN, y + 20, font)
    draw.text(
        (MARGIN + 60, y),
        "the gradient of each regularizer R at the pCE-only network's output S, for the row's "
        "largest object class k (as Fig. 1 of Tang et al.), minus its mean over the classes (the "
        "part a softmax passes on). Black: no push; brightness: |dR/dS_k|.",
        fill=TEXT,
        font=font,
    )


# ---------------------------------------------------------------------------------------------


def run_demo(
    output_dir: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
    command: str = "weakseg demo",
    threads: int = DEFAULT_THREADS,
) -> dict[str, Any]:
    """Train and evaluate the demo's runs; write the results, checkpoints and figure.

    Args:
        output_dir: folder for ``results.json``, ``results.md``, ``figure.png`` and
            ``<run>/checkpoint.pth`` (created).
        settings: sizes and schedule (default :class:`DemoSettings`).
        progress: show one progress bar over all the runs' steps (stderr).
        command: the command line recorded in ``results.md``.
        threads: CPU threads of PyTorch and the numba lattice during the demo (the caller's
            count is restored afterwards); the numbers depend on it.

    Returns:
        The content of ``results.json``: ``settings``, ``runs`` (one dict of metrics per run),
        ``wall_seconds``, ``threads``, ``figure``, ``version``.

    Raises:
        ConfigError: ``threads`` below 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"threads must be an integer >= 1, got {threads!r}",
            hint=f"the README's numbers are those of {DEFAULT_THREADS}",
        )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_demo(Path(output_dir), settings or DemoSettings(), progress, command, threads)
    finally:
        torch.set_num_threads(previous)


def _run_demo(
    output_dir: Path, settings: DemoSettings, progress: bool, command: str, threads: int
) -> dict[str, Any]:
    """:func:`run_demo` on ``threads`` threads (already set)."""
    runs = DEMO_RUNS
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = {run.name: demo_config(run, settings, output_dir, threads) for run in runs}
    datasets: dict[str, tuple[Dataset, Dataset, list[str], int]] = {}
    for run in runs:  # one data set per kind of supervision: generated once, shared
        if run.supervision not in datasets:
            datasets[run.supervision] = build_datasets(configs[run.name])
    _, val_set, class_names, _ = datasets[runs[0].supervision]
    steps = {
        name: config.epochs * (len(datasets[run.supervision][0]) // config.batch_size)
        for run, (name, config) in zip(runs, configs.items(), strict=True)
    }
    bar = tqdm(total=sum(steps.values()), disable=not progress, unit="step", dynamic_ncols=True)

    def on_step(terms: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix_str(" ".join(f"{k}={v:.3f}" for k, v in terms.items()), refresh=False)

    results: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    predictions: dict[str, Tensor] = {}
    for number, run in enumerate(runs, start=1):
        config = configs[run.name]
        bar.set_description(f"[{number}/{len(runs)}] {run.label}")
        bar.set_postfix_str("")
        run_start = time.perf_counter()
        trained = train_run(config, datasets[run.supervision], on_step)
        seconds = time.perf_counter() - run_start
        model = trained.model
        metrics, predictions[run.name] = evaluate_run(
            model, val_set, class_names, settings.band_width, config.val_batch_size
        )
        models[run.name] = model
        results.append(
            {
                "name": run.name,
                "label": run.label,
                "supervision": run.supervision,
                "losses": run.losses,
                "train_seconds": seconds,
                **metrics,
            }
        )
        trained.output_dir.mkdir(parents=True, exist_ok=True)
        save(trained)  # output_dir/checkpoint.pth, readable by weakseg eval / predict
    bar.close()

    figure_path = output_dir / "figure.png"
    examples = _figure_examples(settings, val_set, runs, models, predictions)
    prediction_titles = [f"{r['label']}\nmIoU {_fmt(r['miou'])}" for r in results]
    render_figure(
        examples,
        prediction_titles,
        list(_gradient_regularizers()),
        _figure_title(settings),
        class_names,
    ).save(figure_path)
    wall = time.perf_counter() - start
    report = {
        "settings": dataclasses.asdict(settings),
        "runs": results,
        "wall_seconds": wall,
        "threads": threads,
        "figure": figure_path.name,
        "version": __version__,
    }
    (output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "results.md").write_text(_markdown(results, settings, command, wall, threads))
    return report


def _figure_title(settings: DemoSettings) -> str:
    epochs = f"{settings.epochs} epoch{'s' if settings.epochs != 1 else ''}"
    return (
        f"weakseg demo: 4 U-Nets trained {epochs} on {settings.train_images} synthetic images "
        "with the same data, seed and schedule; only the loss differs. mIoU: on all "
        f"{settings.val_images} validation images.\n"
        "Below: the first validation images (not seen in training). Their simulated scribbles "
        "show what the training labels look like: ~5% of the pixels."
    )


def _gradient_regularizers() -> dict[str, nn.Module]:
    """Column title -> regularizer of the figure's gradient maps: the demo's dense CRF and kernel
    cut losses, and the normalized cut term of kernel cut on its own (as the paper's Fig. 1)."""
    regularizers = gradient_regularizers(
        ("dense_crf", "normalized_cut", "kernel_cut"),
        sigma_rgb=AFFINITY["sigma_rgb"],
        sigma_xy=AFFINITY["sigma_xy"],
        gamma=DEMO_RUNS[2].losses["kernel_cut"]["gamma"],
    )
    return {regularizer_title(name, module): module for name, module in regularizers.items()}


def _figure_examples(
    settings: DemoSettings,
    val_set: Dataset,
    runs: Sequence[DemoRun],
    models: dict[str, nn.Module],
    predictions: dict[str, Tensor],
) -> list[dict[str, Any]]:
    """The first ``figure_examples`` validation images with their predictions and the gradients
    dR/dS_k of :func:`_gradient_regularizers` at the pCE network's output (k: the largest
    object class of the image)."""
    regularizers = _gradient_regularizers()
    generator = SyntheticDataset(
        settings.val_images, settings.image_size, seed=settings.seed * 2 + 1
    )  # the validation set's seed rule of weakseg.engine.loaders
    pce = models["pce"]
    device = next(pce.parameters()).device
    examples = []
    for index in range(min(settings.figure_examples, len(val_set))):
        image, mask, scribbles = generator.generate(index)
        sample = val_set[index]
        with torch.no_grad():
            probs = pce(sample["image"][None].to(device)).softmax(dim=1)
        gradients = regularizer_gradients(
            regularizers, sample["image_raw"][None].to(device), probs, tangent=True
        )  # centred over the classes, as `weakseg viz gradients` shows them
        counts = np.bincount(mask.ravel(), minlength=len(SYNTHETIC_CLASSES))
        k = int(counts[1:].argmax()) + 1 if counts[1:].any() else 0
        examples.append(
            {
                "index": index,
                "image": image,
                "scribbles": scribbles,
                "mask": mask,
                "predictions": [predictions[run.name][index].numpy() for run in runs],
                "gradients": [g[k].cpu().numpy() for g in gradients.values()],
                "k": k,
            }
        )
    return examples
