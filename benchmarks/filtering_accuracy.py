"""Accuracy of the permutohedral lattice against the exact Gaussian filter, and what the
``accuracy`` levels cost.

Errors: relative L2 error ``|W_lattice v - W v| / |W v|`` on 64x64 crops of scikit-image's
astronaut, coffee and chelsea photos (RGBXY, sigma_rgb = 15, sigma_xy in {5, 80}) and on 8-D
features (the astronaut crop's RGBXY at sigma_xy 5 plus three smooth channels) for random,
softmax-like and all-ones channels; the ratio of mean degrees ``W 1`` (1 = unbiased); the symmetry
gap ``|<u, W v> - <W u, v>| / |<u, W v>|``; the lattice's vertex count; for each backend and
``accuracy`` level. The original C++ lattice of the rloss code: relative error 0.38-0.45, degree
ratio 0.55-0.62 (DESIGN.md).

Cost: build + one filtering of K = 21 channels of a 321x321 photo (sigma_xy 5 and 80), the levels
interleaved repeat by repeat; median milliseconds and the ratio to level 0. Timings taken while
other work runs are only ratios: the load average is printed before and after.

    python benchmarks/filtering_accuracy.py [--levels 0 1 2] [--backends torch numba]
        [--cost-backends numba torch] [--repeats 3] [--threads 2] [--no-cost]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from skimage import data

from weakseg.filtering import PermutohedralLattice, dense_gaussian_filter, rgbxy_features
from weakseg.filtering.lattice import numba_available

CROPS = {
    "astronaut": (data.astronaut, (100, 180)),
    "coffee": (data.coffee, (150, 250)),
    "chelsea": (data.chelsea, (75, 112)),
}


def crop(name: str, size: int = 64) -> torch.Tensor:
    load, (top, left) = CROPS[name]
    pixels = torch.from_numpy(load()[top : top + size, left : left + size].copy())
    return pixels.permute(2, 0, 1).double()[None]


def channels() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) * 3
    return {
        "random": torch.rand(1, 4, 64, 64, generator=generator, dtype=torch.float64),
        "softmax": torch.softmax(F.interpolate(logits, size=64, mode="bilinear"), dim=1),
        "ones": torch.ones(1, 1, 64, 64, dtype=torch.float64),
    }


def cases() -> dict[str, torch.Tensor]:
    """Feature sets by name: the photo crops at both bandwidths and the 8-D features."""
    found = {
        f"{name} {sigma_xy:g}": rgbxy_features(crop(name), 15.0, sigma_xy)
        for name in CROPS
        for sigma_xy in (5.0, 80.0)
    }
    generator = torch.Generator().manual_seed(0)
    smooth = torch.rand(1, 3, 8, 8, generator=generator, dtype=torch.float64)
    extra = F.interpolate(smooth, size=64, mode="bilinear") * 4.0  # about 4 bandwidths wide
    found["8-D 5"] = torch.cat([found["astronaut 5"], extra], dim=1)
    return found


def accuracy_table(levels: list[int], backends: list[str]) -> None:
    print(
        f"{'features':>12} {'sigma_xy':>8} {'backend':>7} {'acc':>3} {'vertices':>8} "
        f"{'random':>7} {'softmax':>8} {'ones':>6} {'degree':>7} {'sym gap':>8}"
    )
    values = channels()
    for name, features in cases().items():
        exact = {kind: dense_gaussian_filter(v, features) for kind, v in values.items()}
        image, sigma_xy = name.split()
        for backend in backends:
            for level in levels:
                lattice = PermutohedralLattice(features, backend=backend, accuracy=level)
                errors = [
                    float((lattice(v) - exact[kind]).norm() / exact[kind].norm())
                    for kind, v in values.items()
                ]
                degree = float(lattice(values["ones"]).mean() / exact["ones"].mean())
                u, v = values["random"], torch.randn_like(values["random"])
                gap = float(
                    ((u * lattice(v)).sum() - (lattice(u) * v).sum()).abs()
                    / (u * lattice(v)).sum().abs()
                )
                print(
                    f"{image:>12} {sigma_xy:>8} {backend:>7} {level:>3} {lattice.num_vertices:>8} "
                    f"{errors[0]:>7.3f} {errors[1]:>8.3f} {errors[2]:>6.3f} {degree:>7.3f} "
                    f"{gap:>8.1e}",
                    flush=True,
                )


def cost_table(levels: list[int], backends: list[str], repeats: int) -> None:
    """Build + one filtering of 21 channels at 321x321, levels interleaved in each repeat."""
    pixels = torch.from_numpy(data.astronaut()[:321, :321].copy()).permute(2, 0, 1).float()[None]
    values = torch.softmax(torch.randn(1, 21, 321, 321, generator=torch.Generator()), dim=1)
    print(f"\nload average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print(f"{'backend':>7} {'sigma_xy':>8} {'acc':>3} {'vertices':>8} {'ms':>8} {'ratio':>6}")
    for backend in backends:
        for sigma_xy in (5.0, 80.0):
            features = rgbxy_features(pixels, 15.0, sigma_xy)
            times: dict[int, list[float]] = {level: [] for level in levels}
            vertices = {}
            for level in levels:  # warm-up: compilation, caches
                vertices[level] = PermutohedralLattice(
                    features, backend=backend, accuracy=level
                ).num_vertices
            for _ in range(repeats):
                for level in levels:
                    start = time.perf_counter()
                    PermutohedralLattice(features, backend=backend, accuracy=level)(values)
                    times[level].append(time.perf_counter() - start)
            base = statistics.median(times[levels[0]])
            for level in levels:
                median = statistics.median(times[level])
                print(
                    f"{backend:>7} {sigma_xy:>8g} {level:>3} {vertices[level]:>8} "
                    f"{median * 1e3:>8.0f} {median / base:>6.2f}",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    available = ["torch"] + (["numba"] if numba_available() else [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=available, choices=available)
    parser.add_argument("--cost-backends", nargs="+", default=available[::-1], choices=available)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cost", action="store_true", help="print the errors only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    accuracy_table(args.levels, args.backends)
    if not args.no_cost:
        cost_table(args.levels, args.cost_backends, args.repeats)


if __name__ == "__main__":
    main()
