"""``weakseg segment`` against OpenCV's GrabCut on photos with programmatic scribbles (issue 17).

The photos are scikit-image's bundled samples (no download). Their ground truth is exact by
construction: each test image is a 481 x 321 crop of one sample photo (the background) into
which one or two objects are pasted, each object a binary shape (scikit-image's horse
silhouette, or smooth random blobs from ``skimage.data.binary_blobs`` with a fixed seed)
filled with a crop of another sample photo (its texture). So every region is real photo
content, the boundaries are known to the pixel, and the classes overlap in colour as much as
the photos do (e.g. the cat's fur over the coffee table). Scribbles are drawn from the ground
truth by :func:`weakseg.data.scribbles.simulate_scribbles` (one stroke per connected region,
3 px wide, kept away from the boundary, a fixed seed per image).

Methods, all seeded by the same scribbles:

- ``weakseg segment``: :func:`weakseg.interactive.segment_image` at its defaults.
- ``grabCut (PR_BGD)``: ``cv2.grabCut`` in mask mode, 5 iterations, one class against the rest:
  scribbles of the class ``GC_FGD``, scribbles of the others ``GC_BGD``, every unlabeled pixel
  ``GC_PR_BGD``; with more than two classes, a pixel claimed by several classes (or none)
  takes the one whose scribbles are nearest.
- ``grabCut (nearest)``: :func:`weakseg.proposals.grabcut_proposal` (mask mode, 5 iterations,
  one-vs-rest, unlabeled pixels probable foreground of the class of their nearest scribble,
  conflicts decided by the colour models), the stronger seeding of the two.

Error rate: the share of wrong pixels over the whole image (scribbled pixels included; all
methods keep them). Time: wall-clock seconds of the call, on this machine (loaded or not, said
below the table).

With ``--loop N``, a second table: the annotation loop, where strokes are added to the first
scribbles and the result is computed again, three ways: a fresh ``segment_image`` with all the
strokes, ``InteractiveSegmenter.refine`` from the last result, and ``segment_image(previous=)``
(the one-shot command's ``--previous``). The added strokes (3 x 31 px, horizontal, kept inside
the class):

- ``farthest``: one per class, centred on the class's pixel farthest from its scribbles (the
  extra strokes of ``benchmarks/segment.py``), added once;
- ``on errors``: one per class with wrong pixels, centred on the wrong pixel deepest inside
  the class's largest error, added ``N`` times, each round on the errors of the method's own
  last result.

    python scripts/segment_photos.py
    python scripts/segment_photos.py --loop 3
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

HEIGHT, WIDTH = 321, 481
# (name, background photo, [(shape, texture photo), ...]); texture crops are offset per object.
CASES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("horse-fur-on-coffee", "coffee", (("horse", "chelsea"),)),
    ("horse-astronaut-on-rocket", "rocket", (("horse_flipped", "astronaut"),)),
    ("blobs-coffee-on-chelsea", "chelsea", (("blobs", "coffee"),)),
    ("blobs-rocket-on-astronaut", "astronaut", (("blobs2", "rocket"),)),
    ("horse-hubble-on-astronaut", "astronaut", (("horse", "hubble_deep_field"),)),
    ("blobs-astronaut-on-coffee", "coffee", (("blobs3", "astronaut"),)),
    (
        "3 classes: horse + blobs on rocket",
        "rocket",
        (("horse", "chelsea"), ("blobs_small", "coffee")),
    ),
    (
        "3 classes: horse + blobs on chelsea",
        "chelsea",
        (("horse_flipped", "rocket"), ("blobs_small2", "astronaut")),
    ),
)


def _photo(name: str) -> np.ndarray:
    """A bundled sample photo as uint8 ``[H, W, 3]``."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def _crop(photo: np.ndarray, offset: int) -> np.ndarray:
    """A HEIGHT x WIDTH crop (the photo resized up first if it is smaller)."""
    from PIL import Image

    h, w = photo.shape[:2]
    scale = max(HEIGHT / h, WIDTH / w, 1.0)
    if scale > 1.0:
        size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR))
        h, w = photo.shape[:2]
    y = (offset * 37) % (h - HEIGHT + 1)
    x = (offset * 53) % (w - WIDTH + 1)
    return photo[y : y + HEIGHT, x : x + WIDTH]


def _shape(name: str) -> np.ndarray:
    """A binary object mask ``[HEIGHT, WIDTH]``."""
    from PIL import Image
    from skimage import data

    if name.startswith("horse"):
        horse = ~data.horse()  # True on the horse
        resized = Image.fromarray(horse.astype(np.uint8) * 255).resize((330, 270), Image.NEAREST)
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[25:295, 75:405] = np.asarray(resized) > 127
        return mask[:, ::-1] if name.endswith("flipped") else mask
    seed = {"blobs": 1, "blobs2": 2, "blobs3": 3, "blobs_small": 4, "blobs_small2": 5}[name]
    fraction = 0.12 if name.startswith("blobs_small") else 0.3
    blobs = data.binary_blobs(512, blob_size_fraction=0.2, volume_fraction=fraction, rng=seed)
    return blobs[:HEIGHT, :WIDTH]


def make_case(index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, image float32 [3, H, W] 0-255, ground truth [H, W], scribbles [H, W])``."""
    from weakseg.data.scribbles import simulate_scribbles

    name, background, objects = CASES[index]
    image = _crop(_photo(background), index).copy()
    truth = np.zeros((HEIGHT, WIDTH), np.int64)
    for k, (shape, texture) in enumerate(objects, start=1):
        mask = _shape(shape) & (truth == 0)
        image[mask] = _crop(_photo(texture), index + 7 * k)[mask]
        truth[mask] = k
    scribbles = simulate_scribbles(truth, width=3, seed=index)
    return name, image.transpose(2, 0, 1).astype(np.float32), truth, scribbles


def grabcut_pr_bgd(image: np.ndarray, scribbles: np.ndarray, num_classes: int) -> np.ndarray:
    """One-vs-rest ``cv2.grabCut`` (mask mode, 5 iterations), unlabeled = probable background."""
    import cv2

    from weakseg.interactive.distance import class_distances

    bgr = np.ascontiguousarray(image.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8)
    claims = np.zeros((num_classes, *scribbles.shape), bool)
    for k in range(num_classes):
        if not (scribbles == k).any():
            continue  # no class-k stroke (e.g. an ACDC slice without one): it claims nothing
        mask = np.full(scribbles.shape, cv2.GC_PR_BGD, np.uint8)
        mask[(scribbles != 255) & (scribbles != k)] = cv2.GC_BGD
        mask[scribbles == k] = cv2.GC_FGD
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.grabCut(bgr, mask, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
        claims[k] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if num_classes == 2:
        return claims[1].astype(np.int64)
    nearest = class_distances(scribbles, num_classes).argmin(axis=0)
    single = claims.sum(axis=0) == 1
    return np.where(single, claims.argmax(axis=0), nearest)


def _add_stroke(scribbles: np.ndarray, truth: np.ndarray, k: int, y: int, x: int) -> None:
    """A 3 x 31 px horizontal class-k stroke centred on (y, x), kept inside the class."""
    rows, cols = slice(max(y - 1, 0), y + 2), slice(max(x - 15, 0), x + 16)
    scribbles[rows, cols] = np.where(truth[rows, cols] == k, k, scribbles[rows, cols])


def farthest_strokes(scribbles: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One more stroke per class, on its pixel farthest from its scribbles."""
    from weakseg.interactive.distance import class_distances

    out = scribbles.copy()
    distances = class_distances(scribbles, int(truth.max()) + 1)
    for k, distance in enumerate(distances):
        y, x = np.unravel_index(int(np.where(truth == k, distance, -1).argmax()), truth.shape)
        _add_stroke(out, truth, k, int(y), int(x))
    return out


def strokes_on_errors(scribbles: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One more stroke per class that ``labels`` misses somewhere, on the missed pixel
    farthest from the rest of the class's pixels (the middle of its largest error)."""
    from weakseg.interactive.distance import class_distances

    out = scribbles.copy()
    for k in range(int(truth.max()) + 1):
        missed = (truth == k) & (labels != k)
        if missed.any():
            depth = class_distances(np.where(missed, 255, 0), 1)[0]
            y, x = np.unravel_index(int(np.where(missed, depth, -1).argmax()), truth.shape)
            _add_stroke(out, truth, k, int(y), int(x))
    return out


def annotation_loop(rounds: int) -> None:
    """Mean error over the photos after added strokes: fresh call, refine, ``previous``."""
    from weakseg.interactive import InteractiveSegmenter, segment_image

    names = ("fresh call", "InteractiveSegmenter.refine", "segment_image(previous=)")
    errors = {(stroke, r): {n: [] for n in names} for stroke, r in [("farthest", 1)]}
    errors.update({("on errors", r): {n: [] for n in names} for r in range(1, rounds + 1)})
    seconds = {n: [] for n in names}
    for index in range(len(CASES)):
        _, image, truth, scribbles = make_case(index)
        k = int(truth.max()) + 1
        for stroke in ("farthest", "on errors"):
            segmenter = InteractiveSegmenter(image, num_classes=k)
            first = segmenter.segment(scribbles)  # = segment_image(image, scribbles)
            strokes = {n: scribbles for n in names}
            labels = {n: first for n in names}
            for r in range(1, (1 if stroke == "farthest" else rounds) + 1):
                for name in names:
                    if stroke == "farthest":
                        strokes[name] = farthest_strokes(scribbles, truth)
                    else:
                        strokes[name] = strokes_on_errors(strokes[name], truth, labels[name])
                    start = time.perf_counter()
                    if name == "fresh call":
                        labels[name] = segment_image(image, strokes[name], num_classes=k)
                    elif name == "InteractiveSegmenter.refine":
                        labels[name] = segmenter.refine(strokes[name])
                    else:
                        labels[name] = segment_image(
                            image, strokes[name], num_classes=k, previous=labels[name]
                        )
                    seconds[name].append(time.perf_counter() - start)
                    errors[stroke, r][name].append(float((labels[name] != truth).mean()))
        print(f"{CASES[index][0]}: done", flush=True)
    print("\n| added strokes | " + " | ".join(f"{n} error" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for (stroke, r), row in errors.items():
        label = stroke if stroke == "farthest" else f"{stroke}, round {r}"
        print(f"| {label} | " + " | ".join(f"{np.mean(row[n]):.2%}" for n in names) + " |")
    print("| s / call | " + " | ".join(f"{np.mean(seconds[n]):.2f}" for n in names) + " |")


def main(args: argparse.Namespace) -> None:
    if args.loop:
        annotation_loop(args.loop)
        print(f"\ncommand: python {' '.join(sys.argv)}")
        return
    from weakseg.interactive import segment_image
    from weakseg.proposals import grabcut_proposal

    methods = {
        "weakseg segment": lambda image, s, k: segment_image(image, s, num_classes=k),
        "grabCut (PR_BGD)": grabcut_pr_bgd,
        "grabCut (nearest)": lambda image, s, k: grabcut_proposal(image, s, num_classes=k),
    }
    rows = []
    for index in range(len(CASES)):
        name, image, truth, scribbles = make_case(index)
        k = int(truth.max()) + 1
        row = {"name": name, "scribbled": float((scribbles != 255).mean())}
        for method, run in methods.items():
            start = time.perf_counter()
            labels = np.asarray(run(image, scribbles, k))
            row[method] = (float((labels != truth).mean()), time.perf_counter() - start)
        rows.append(row)
        print(
            f"{name}: " + ", ".join(f"{m} {row[m][0]:.2%} ({row[m][1]:.2f} s)" for m in methods),
            flush=True,
        )
    print()
    header = "| image | scribbled | " + " | ".join(f"{m} error" for m in methods) + " |"
    print(header)
    print("|" + "---|" * (2 + len(methods)))
    for row in rows:
        cells = " | ".join(f"{row[m][0]:.2%}" for m in methods)
        print(f"| {row['name']} | {row['scribbled']:.2%} | {cells} |")
    means = " | ".join(f"**{np.mean([r[m][0] for r in rows]):.2%}**" for m in methods)
    medians = " | ".join(f"{np.median([r[m][0] for r in rows]):.2%}" for m in methods)
    seconds = " | ".join(f"{np.mean([r[m][1] for r in rows]):.2f}" for m in methods)
    print(f"| mean | | {means} |")
    print(f"| median | | {medians} |")
    print(f"| s / image | | {seconds} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--loop",
        type=int,
        default=0,
        metavar="N",
        help="instead of the comparison: the annotation loop with N rounds of strokes on errors",
    )
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
