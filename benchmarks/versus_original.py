"""The dense CRF loss beside the original rloss C++ filter, in one process, interleaved.

Forward + backward of the dense CRF loss as the original rloss code computes it (its
``DenseCRFLossFunction``: ``-sum_k S_k' W S_k / B`` and the gradient ``-2 W S_k / B``) at
321² and 512², batch 1 and 4, K = 21, RGBXY with sigma_rgb = 15 and sigma_xy = 100, on real
photos (scikit-image's astronaut, coffee, chelsea and rocket, resized), 2 threads:

- ``original``: the paper code's ``bilateralfilter_batch`` (SWIG wrapper around its C++
  permutohedral lattice, OpenMP over images), when importable from ``--original DIR`` or
  ``$RLOSS_WRAPPER`` (a folder holding the built ``_bilateralfilter*.so`` and
  ``bilateralfilter.py``; build it outside this repository, see the README).
- ``numba`` / ``torch``: ``weakseg.losses.dense_crf_loss(..., normalization="rloss")`` with the
  lattice on the numba or the pure-PyTorch backend.

Each round runs every implementation once, in rotating order, so that all see the same
background load; the table gives the median over ``--repeats`` rounds (after one warm-up) and
the medians of the per-round ratios. ``B4/B1`` is the batch scaling (4.0 = linear). ``loss
ratio`` is the original's loss over ours: the factor by which the original filter under-weighs
``W`` (ours is unbiased against the exact Gaussian sum), i.e. how much harder a weight tuned for
the original regularizes with ours.

``--busy-workers 2`` keeps two DataLoader worker processes busy beside the measurement (each
sorting arrays, one thread each), as a training run's data loading does: the cores are then
oversubscribed, where PyTorch's thread pool is known to collapse.

    RLOSS_WRAPPER=/path/to/bilateralfilter python benchmarks/versus_original.py [--repeats 7]
    RLOSS_WRAPPER=... python benchmarks/versus_original.py --busy-workers 2
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data

from weakseg.cli.bench import softmax_values
from weakseg.filtering import preferred_backend
from weakseg.losses import dense_crf_loss

PHOTOS = (data.astronaut, data.coffee, data.chelsea, data.rocket)
SIGMA_RGB, SIGMA_XY = 15.0, 100.0
CASES = ((321, 1), (321, 4), (512, 1), (512, 4))

Run = Callable[[torch.Tensor, torch.Tensor], tuple[float, torch.Tensor]]


def photos(size: int, batch: int) -> torch.Tensor:
    """``[batch, 3, size, size]`` float32 in 0-255: real photos, resized (antialiased)."""
    images = []
    for load in PHOTOS[:batch]:
        image = torch.from_numpy(load().copy()).permute(2, 0, 1).float()[None]
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
        images.append(image.clamp(0, 255).round())
    return torch.cat(images)


def load_original(folder: str | None) -> ModuleType | None:
    """The original's SWIG module from ``folder``, or None (with the reason on stderr)."""
    if not folder:
        return None
    sys.path.insert(0, str(Path(folder).resolve()))
    try:
        return importlib.import_module("bilateralfilter")
    except ImportError as error:
        print(f"original wrapper not importable from {folder}: {error}", file=sys.stderr)
        return None
    finally:
        sys.path.pop(0)


def original_run(module: ModuleType) -> Run:
    """The original ``DenseCRFLossFunction`` forward + backward (without its ``.cuda()``)."""

    def run(images: torch.Tensor, probs: torch.Tensor) -> tuple[float, torch.Tensor]:
        batch, classes, height, width = probs.shape
        flat_images = images.numpy().flatten()
        segmentations = probs.detach().numpy().flatten()
        filtered = np.zeros(segmentations.shape, dtype=np.float32)
        module.bilateralfilter_batch(
            flat_images, segmentations, filtered, batch, classes, height, width, SIGMA_RGB, SIGMA_XY
        )
        loss = -float(np.dot(segmentations, filtered)) / batch
        grad = -2 * torch.from_numpy(filtered.reshape(probs.shape)) / batch
        return loss, grad

    return run


def weakseg_run(backend: str) -> Run:
    def run(images: torch.Tensor, probs: torch.Tensor) -> tuple[float, torch.Tensor]:
        probs = probs.detach().requires_grad_()
        with preferred_backend(backend):  # type: ignore[arg-type]
            loss = dense_crf_loss(
                images, probs, sigma_rgb=SIGMA_RGB, sigma_xy=SIGMA_XY, normalization="rloss"
            )
        loss.backward()
        assert probs.grad is not None
        return float(loss.detach()), probs.grad

    return run


class _BusyWork(torch.utils.data.Dataset):
    """Endless CPU work for DataLoader workers: sorting 200k random numbers per item."""

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> float:
        return float(np.sort(np.random.default_rng(index).random(200_000))[0])


def start_busy_workers(workers: int) -> threading.Event:
    """Start ``workers`` DataLoader worker processes, kept busy by a draining thread; set the
    returned event to stop them."""
    loader = torch.utils.data.DataLoader(_BusyWork(), batch_size=4, num_workers=workers)
    stop = threading.Event()

    def drain() -> None:
        for _ in loader:
            if stop.is_set():
                break

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(2.0)  # let the workers start
    return stop


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--original",
        default=os.environ.get("RLOSS_WRAPPER"),
        help="folder of the built original wrapper (default: $RLOSS_WRAPPER)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument(
        "--cases", nargs="+", default=[f"{s}x{b}" for s, b in CASES], metavar="SIZExBATCH"
    )
    parser.add_argument("--busy-workers", type=int, default=0, help="DataLoader workers beside")
    return parser


def main(args: argparse.Namespace) -> dict[tuple[int, int], dict[str, float]]:
    """Print the table; returns the median ms of each implementation per (size, batch)."""
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the original reads omp_get_max_threads
    runs: dict[str, Run] = {}
    module = load_original(args.original)
    if module is not None:
        runs["original"] = original_run(module)
    runs["numba"] = weakseg_run("numba")
    runs["torch"] = weakseg_run("torch")
    names = list(runs)
    busy = start_busy_workers(args.busy_workers) if args.busy_workers else None
    print(
        f"dense CRF loss forward+backward, K={args.classes}, RGBXY sigma_rgb={SIGMA_RGB:g} "
        f"sigma_xy={SIGMA_XY:g}, photos, {args.threads} threads, median of {args.repeats} "
        f"interleaved rounds, ms"
        + (f", {args.busy_workers} busy DataLoader workers" if busy else "")
    )
    if module is None:
        print("(original wrapper not given: --original DIR or RLOSS_WRAPPER)")
    columns = [f"{name:>9}" for name in names]
    if module is not None:
        columns += [f"{'orig/numba':>10}", f"{'loss ratio':>10}"]
    columns += [f"{'torch/numba':>11}"]
    print(f"{'size':>9} {'B':>2} " + " ".join(columns))
    medians: dict[tuple[int, int], dict[str, float]] = {}
    for case in args.cases:
        size, batch = (int(v) for v in case.split("x"))
        images = photos(size, batch)
        probs = softmax_values(batch, args.classes, size)
        times: dict[str, list[float]] = {name: [] for name in names}
        losses: dict[str, float] = {}
        for name in names:  # warm-up (numba compiles, pools fill)
            losses[name] = runs[name](images, probs)[0]
        for round_index in range(args.repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runs[name](images, probs)
                times[name].append((time.perf_counter() - start) * 1e3)
        medians[(size, batch)] = {name: statistics.median(t) for name, t in times.items()}

        def ratio(top: str, bottom: str, times: dict[str, list[float]] = times) -> float:
            return statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))

        cells = [f"{medians[(size, batch)][name]:>9.1f}" for name in names]
        if module is not None:
            cells += [
                f"{ratio('original', 'numba'):>9.2f}x",
                f"{losses['original'] / losses['numba']:>10.3f}",
            ]
        cells += [f"{ratio('torch', 'numba'):>10.2f}x"]
        print(f"{f'{size}x{size}':>9} {batch:>2} " + " ".join(cells), flush=True)
    for size in sorted({s for s, _ in medians}):
        if (size, 1) in medians and (size, 4) in medians:
            scaling = "  ".join(
                f"{name} {medians[(size, 4)][name] / medians[(size, 1)][name]:.2f}x"
                for name in names
            )
            print(f"batch scaling {size}x{size}, B4/B1: {scaling}")
    if busy is not None:
        busy.set()
    return medians


if __name__ == "__main__":
    main(get_args_parser().parse_args())
