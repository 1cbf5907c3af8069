"""``weakseg segment`` as a person uses it: seconds and peak memory per image (issue 17).

For each size (0.15 MP = 481 x 321, 1 MP = 1224 x 817) and each load (``quiet``, and ``busy``:
one CPU-bound Python process that this script starts, bounded in time, and stops), it runs a
fresh ``weakseg segment IMAGE --scribbles S.png -o MASK.png`` subprocess ``--repeats`` times
with ``NUMBA_NUM_THREADS`` / ``OMP_NUM_THREADS`` = ``--threads`` and reports medians of:

- ``command s``: wall-clock seconds of the whole subprocess (interpreter start-up, imports,
  reading, the work, writing);
- ``work s``: the seconds the command prints for the optimization alone (the call of
  :func:`~weakseg.interactive.segment_image`, after the imports; in a fresh process this
  includes loading numba's cached kernels);
- ``warm work s``: the same call in this (benchmark) process after one call that loaded the
  kernels: the optimization without the numba first-call cost;
- ``numba first call s``: ``work s - warm work s``;
- ``imports s``: a fresh ``python -c`` importing what the command imports before the call
  (the CLI, NumPy, Pillow, the method and numba with its NumPy layer, as the command does);
- ``start-up s``: ``imports s`` plus the kernels' first-call cost: what a call costs
  before any work;
- ``peak RSS MB``: the subprocess's maximum resident set size (GNU ``/usr/bin/time``'s ``%M``);
- ``--previous s``: a second command after one more stroke per class, with ``--previous``
  the first result: its work seconds, and as a fraction of the first call's;
- ``API refine warm work s``: in this process, :class:`~weakseg.interactive.InteractiveSegmenter`
  ``.segment`` then ``.refine`` after the same added strokes (the annotation loop of the Python
  API, which keeps the lattices and the last result): the refine's seconds, and
  ``API refine / first (warm work)`` the median over the repeats of refine / segment, each
  pair timed back to back.

The test image is a photo scene like ``scripts/segment_photos.py``'s: scikit-image's coffee
photo with the horse silhouette filled with the cat photo, resized to each size, scribbles
from :func:`weakseg.data.scribbles.simulate_scribbles` (seed 0). Under load, figures are not
comparable between machines: ``uptime`` is printed before each row.

    python benchmarks/segment.py                 # both sizes, quiet and busy, 3 repeats
    python benchmarks/segment.py --sizes 0.15 --loads quiet --repeats 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"0.15": (321, 481), "1": (817, 1224)}
TARGETS = {"work s": 1.0, "command s": 2.5, "peak RSS MB": 300.0}  # at 0.15 MP
_WEAKSEG = [sys.executable, "-m", "weakseg"]
# What `weakseg segment` imports before its call of segment_image.
_IMPORTS = (
    "import numpy, PIL.Image, weakseg.cli, weakseg.cli.segment; "
    "from weakseg.cli._numba_startup import import_numba_without_blas_probe as f; f(); "
    "import weakseg.interactive.appearance_crf"
)
_BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def make_scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image uint8 [H, W, 3], truth [H, W] {0, 1}, scribbles uint8 [H, W])``."""
    from PIL import Image
    from skimage import data

    from weakseg.data.scribbles import simulate_scribbles

    def resized(array: np.ndarray, resample) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize((width, height), resample))

    image = resized(data.coffee(), Image.BILINEAR).copy()
    texture = resized(data.chelsea(), Image.BILINEAR)
    horse = np.zeros((321, 481), np.uint8)
    horse[25:295, 75:405] = np.asarray(
        Image.fromarray((~data.horse()).astype(np.uint8) * 255).resize((330, 270), Image.NEAREST)
    )
    truth = (resized(horse, Image.NEAREST) > 127).astype(np.int64)
    image[truth == 1] = texture[truth == 1]
    scribbles = simulate_scribbles(truth, width=3, seed=0).astype(np.uint8)
    return image, truth, scribbles


def _more_strokes(scribbles: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One short extra stroke per class (the annotation loop's next step): a 3 px wide
    horizontal segment through the class's pixel farthest from its current scribbles."""
    from weakseg.interactive.distance import class_distances

    out = scribbles.copy()
    distances = class_distances(scribbles, 2)
    for k in (0, 1):
        far = np.where(truth == k, distances[k], -1)
        y, x = np.unravel_index(int(far.argmax()), far.shape)
        rows, cols = slice(max(y - 1, 0), y + 2), slice(max(x - 15, 0), x + 16)
        out[rows, cols] = np.where(truth[rows, cols] == k, k, out[rows, cols])
    return out


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """``(wall seconds, peak RSS MB, stdout)`` of one fresh subprocess.

    The peak is GNU time's ``%M`` (the command's own maximum RSS, counted from its exec):
    ``os.wait4``'s rusage of a child forked from this process would count the pages the fork
    shared with this (larger) process before the exec. Without ``/usr/bin/time`` it is NaN.
    """
    timer = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapped = [timer, "-f", "%M", "-o", rss.name, *argv] if timer else argv
        start = time.perf_counter()
        result = subprocess.run(wrapped, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr}")
        peak = float(rss.read().split()[-1]) / 1024.0 if timer else float("nan")
    return seconds, peak, result.stdout


def _work_seconds(stdout: str) -> float:
    """The optimization time printed by ``weakseg segment`` ("wrote ... (1.23 s)")."""
    match = re.search(r"([0-9.]+) s\)\s*$", stdout.strip())
    if match is None:
        raise RuntimeError(f"no time in the output of weakseg segment: {stdout!r}")
    return float(match.group(1))


def _warm_work(image: np.ndarray, scribbles: np.ndarray, previous=None) -> float:
    """Seconds of segment_image in this process (kernels already loaded)."""
    from weakseg.interactive.appearance_crf import segment_image

    start = time.perf_counter()
    segment_image(image.transpose(2, 0, 1).astype(np.float32), scribbles, previous=previous)
    return time.perf_counter() - start


def _api_round(image: np.ndarray, scribbles: np.ndarray, more: np.ndarray) -> tuple[float, float]:
    """Seconds of ``InteractiveSegmenter.segment`` then ``.refine`` after the added strokes,
    timed back to back in this process."""
    from weakseg.interactive import InteractiveSegmenter

    segmenter = InteractiveSegmenter(image.transpose(2, 0, 1).astype(np.float32))
    start = time.perf_counter()
    segmenter.segment(scribbles)
    first = time.perf_counter() - start
    start = time.perf_counter()
    segmenter.refine(more)
    return first, time.perf_counter() - start


def _uptime() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(size: str, load: str, repeats: int, threads: int, folder: Path) -> dict[str, float]:
    """Medians over ``repeats`` fresh commands of one size under one load."""
    from PIL import Image

    image, truth, scribbles = make_scene(*SIZES[size])
    paths = {name: folder / f"{size}-{name}.png" for name in ("image", "s", "s2", "m", "m2")}
    Image.fromarray(image).save(paths["image"])
    Image.fromarray(scribbles).save(paths["s"])
    Image.fromarray(_more_strokes(scribbles, truth)).save(paths["s2"])
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    first = [*_WEAKSEG, "segment", str(paths["image"]), "--scribbles", str(paths["s"])]
    first += ["-o", str(paths["m"])]
    second = [*_WEAKSEG, "segment", str(paths["image"]), "--scribbles", str(paths["s2"])]
    second += ["--previous", str(paths["m"]), "-o", str(paths["m2"])]
    imports = [sys.executable, "-c", _IMPORTS]

    busy = None
    if load == "busy":
        budget = 60 * repeats * (4 if size == "1" else 1) + 60
        busy = subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=budget)])
        time.sleep(0.5)
    rows: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            seconds, rss, stdout = run_measured(first, env)
            work = _work_seconds(stdout)
            import_s = run_measured(imports, env)[0]
            seconds2, rss2, stdout2 = run_measured(second, env)
            work2 = _work_seconds(stdout2)
            previous = np.asarray(Image.open(paths["m"])).astype(np.int64)
            warm = _warm_work(image, scribbles)
            warm2 = _warm_work(image, np.asarray(Image.open(paths["s2"])), previous)
            api_first, api_refine = _api_round(
                image, scribbles, np.asarray(Image.open(paths["s2"]))
            )
            for key, value in [
                ("command s", seconds),
                ("work s", work),
                ("warm work s", warm),
                ("numba first call s", work - warm),
                ("imports s", import_s),
                ("peak RSS MB", max(rss, rss2)),
                ("error %", 100 * float((np.asarray(Image.open(paths["m"])) != truth).mean())),
                ("--previous command s", seconds2),
                ("--previous work s", work2),
                ("--previous warm work s", warm2),
                ("API refine warm work s", api_refine),
                ("API refine / first (warm work)", api_refine / api_first),
            ]:
                rows.setdefault(key, []).append(value)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    result = {key: statistics.median(values) for key, values in rows.items()}
    result["start-up s"] = result["imports s"] + result["numba first call s"]
    result["--previous / first (work)"] = result["--previous work s"] / result["work s"]
    result["--previous / first (warm work)"] = (
        result["--previous warm work s"] / result["warm work s"]
    )
    for key in ("API refine warm work s", "API refine / first (warm work)"):  # last rows
        result[key] = result.pop(key)
    return result


def main(args: argparse.Namespace) -> None:
    # The warm in-process calls run on the same number of threads as the commands.
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    _warm_work(*make_scene(64, 96)[::2])  # load the kernels here once
    columns = [f"{size} MP {load}" for size in args.sizes for load in args.loads]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for load in args.loads:
                before = _uptime()
                results[f"{size} MP {load}"] = measure(
                    size, load, args.repeats, args.threads, Path(folder)
                )
                print(f"{size} MP {load}: done ({before} before, {_uptime()} after)", flush=True)
    keys = list(next(iter(results.values())))
    print(f"\nweakseg segment, {args.threads} threads, median of {args.repeats} fresh commands")
    print("| | " + " | ".join(columns) + " | target at 0.15 MP |")
    print("|---|" + "---|" * (len(columns) + 1))
    for key in keys:
        cells = " | ".join(f"{results[c][key]:.2f}" for c in columns)
        target = f"<= {TARGETS[key]:g}" if key in TARGETS else ""
        print(f"| {key} | {cells} | {target} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--loads", nargs="+", choices=("quiet", "busy"), default=["quiet", "busy"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
