"""Dense CRF inference time on the CPU: weakseg's mean field against pydensecrf2 (C++).

One photo-like generated 321x321 RGB image (rounded to 8 bits, which pydensecrf needs) and smooth
logits for K = 21 classes; DeepLab's CRF (bilateral weight 4, theta_alpha 49, theta_beta 5;
smoothness weight 3, theta_gamma 3; symmetric normalization) for 5 iterations. Both sides are
timed end to end: kernels built from the image, unaries in, marginals out. The two run
interleaved, so that both see the same background load; the median, min and max of --repeats
runs after one warm-up are printed, in milliseconds. pydensecrf is single-threaded; --threads
sets PyTorch's threads, which numba's follow. pydensecrf is skipped if absent
(``pip install pydensecrf2`` builds it; it needs Cython and a C++ compiler).

Below them, where weakseg's time goes, for each lattice backend (``dense_crf_inference`` itself
runs the default one, numba when installed): building the two lattices (hashing and
calibration), the degree filtering of symmetric normalization, and one filtering of all K
channels by both kernels (paid once per iteration). The smoothness kernel depends on the image
size only, and ``dense_crf_inference`` keeps the last few it built (lattice and degrees): after
the warm-up a call builds the bilateral kernel alone, as the derived "lattice work" assumes;
the "first call on this size" row times a call that must build both, as pydensecrf always does.
Plain mean-field updates filter with the lattice's one-way blur (``symmetric=False``), like
pydensecrf; the rows below use it too.
The rest of the inference (the features, and per iteration the update: with Potts compatibility
and numba, one fused pass of softmax over [K, H, W], the kernels' scalings and weights being
folded into the lattices' splat and slice) is derived from the medians. Every
measurement runs in the same round robin.

    python benchmarks/crf_inference.py --repeats 7 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

from weakseg.cli.bench import softmax_values, synthetic_image
from weakseg.crf import dense_crf_inference
from weakseg.crf._kernels import _smoothness_messages as smoothness_cache
from weakseg.filtering import (
    PermutohedralLattice,
    intensity_position_features,
    position_features,
)
from weakseg.filtering.lattice import numba_available

# DeepLab's post-processing CRF, weakseg's defaults.
CRF = {
    "w_bilateral": 4.0,
    "theta_alpha": 49.0,
    "theta_beta": 5.0,
    "w_gaussian": 3.0,
    "theta_gamma": 3.0,
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=321, help="image side (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=21, help="K (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=5, help="mean-field iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=7, help="median of N (default: %(default)s)")
    parser.add_argument(
        "--backends",
        nargs="*",
        default=["numba", "torch"],
        help="lattice backends to break down (default: %(default)s)",
    )
    return parser


def load_pydensecrf() -> ModuleType | None:
    """pydensecrf's ``densecrf`` module, or ``None`` when it is not installed."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        return None
    return densecrf


def pydensecrf_inference(
    densecrf: ModuleType, rgb: np.ndarray, unary: np.ndarray, n_iter: int
) -> np.ndarray:
    """pydensecrf with the same CRF: ``rgb [H, W, 3]`` uint8, ``unary [K, H*W]`` = -logits."""
    height, width = rgb.shape[:2]
    crf = densecrf.DenseCRF2D(width, height, unary.shape[0])
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=CRF["theta_gamma"], compat=CRF["w_gaussian"])
    crf.addPairwiseBilateral(
        sxy=CRF["theta_alpha"], srgb=CRF["theta_beta"], rgbim=rgb, compat=CRF["w_bilateral"]
    )
    return np.asarray(crf.inference(n_iter))


def elapsed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def lattice_runs(
    backend: str, features: list[torch.Tensor], probs: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """The parts of weakseg's inference that depend on the lattice ``backend``;
    ``features`` are the bilateral kernel's, then the smoothness kernel's. Lattices with the
    one-way blur, as the inference's plain mean-field updates use."""
    options = {"backend": backend, "symmetric": False}
    lattices = [PermutohedralLattice(f, **options) for f in features]
    ones = torch.ones_like(probs[:, :1])
    return {
        f"  {backend}: build bilateral lattice": lambda: PermutohedralLattice(
            features[0], **options
        ),
        f"  {backend}: build smoothness lattice": lambda: PermutohedralLattice(
            features[1], **options
        ),
        f"  {backend}: both, no calibration": lambda: [
            PermutohedralLattice(f, calibrate=False, **options) for f in features
        ],
        f"  {backend}: bilateral degrees (1 chan.)": lambda: lattices[0](ones),
        f"  {backend}: filter K channels, both": lambda: [w(probs) for w in lattices],
    }


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    size, classes = args.size, args.classes
    rgb = synthetic_image(size).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    logits = torch.log(softmax_values(1, classes, size))  # (1, K, H, W)
    unary = np.ascontiguousarray(-logits[0].reshape(classes, -1).numpy())  # (K, N)
    densecrf = load_pydensecrf()
    default_backend = "numba" if numba_available() else "torch"
    backends = [b for b in args.backends if b != "numba" or numba_available()]

    runs: dict[str, Callable[[], object]] = {}
    if densecrf is not None:
        runs["pydensecrf2 (C++, 1 thread)"] = lambda: pydensecrf_inference(
            densecrf, rgb, unary, args.iters
        )
        runs["  pydensecrf2: build, 0 iterations"] = lambda: pydensecrf_inference(
            densecrf, rgb, unary, 0
        )
    runs["weakseg dense_crf_inference"] = lambda: dense_crf_inference(
        logits, images, n_iter=args.iters, **CRF
    )
    runs["  first call on this size"] = lambda: (
        smoothness_cache.cache_clear(),
        dense_crf_inference(logits, images, n_iter=args.iters, **CRF),
    )
    features = [
        intensity_position_features(images, CRF["theta_beta"], CRF["theta_alpha"]),
        position_features(1, (size, size), CRF["theta_gamma"]),
    ]
    probs = torch.softmax(logits, dim=1)
    for backend in backends:
        runs |= lattice_runs(backend, features, probs)

    # Round robin, so that every measurement sees the same background load.
    for fn in runs.values():
        fn()  # warm-up (numba compilation, allocator)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(elapsed_ms(fn))
    median = {name: statistics.median(values) for name, values in times.items()}

    print(
        f"dense CRF inference, {size}x{size}, K={classes}, {args.iters} iterations, CPU, "
        f"torch threads={torch.get_num_threads()}, weakseg lattice backend={default_backend} "
        f"(dense_crf_inference has no option for it), {args.repeats} interleaved runs, ms"
    )
    print(f"{'':40s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for name, values in times.items():
        print(f"{name:40s} {median[name]:8.1f} {min(values):8.1f} {max(values):8.1f}")
    if densecrf is None:
        print(
            "pydensecrf2 not installed: pip install pydensecrf2 (needs Cython and a C++ compiler)"
        )
    if default_backend in backends:
        lattice = (
            median[f"  {default_backend}: build bilateral lattice"]
            + median[f"  {default_backend}: bilateral degrees (1 chan.)"]
            + args.iters * median[f"  {default_backend}: filter K channels, both"]
        )
        total = median["weakseg dense_crf_inference"]
        print(
            f"weakseg = lattice work {lattice:.1f} (bilateral build + degrees, {args.iters} x "
            f"filter by both) "
            f"+ the rest {total - lattice:.1f} (features; per iteration the softmax update, "
            f"one pass over [K, H, W] with numba)"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
