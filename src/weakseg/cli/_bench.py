"""The body of ``weakseg bench`` (:mod:`weakseg.cli.bench` holds its parser): synthetic
images, timing, the accuracy check against the exact filter."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from weakseg.engine.device import resolve_device
from weakseg.filtering import PermutohedralLattice, dense_gaussian_filter, rgbxy_features

# Loss forward+backward of the original rloss C++ lattice on this 2-core machine (DESIGN.md), ms:
# K = 21, sigma_rgb = 15, sigma_xy = 100, 2 threads.
ORIGINAL_MS: dict[tuple[int, int], float] = {
    (321, 1): 129,
    (321, 4): 355,
    (512, 1): 310,
    (512, 4): 880,
}


def synthetic_image(size: int, seed: int = 0) -> torch.Tensor:
    """A photo-like RGB test image ``[3, size, size]`` in 0-255: shaded background, coloured
    ellipses with soft edges, fine texture and sensor noise. Deterministic by ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = (
        (rand(3, 1, 1) * 120 + 40)
        + (rand(3, 1, 1) - 0.5) * 120 * xs
        + (rand(3, 1, 1) - 0.5) * 80 * ys
    )
    for _ in range(12):
        cy, cx, ry, rx = rand(4) * torch.tensor([1.0, 1.0, 0.25, 0.25]) + torch.tensor(
            [0, 0, 0.05, 0.05]
        )
        inside = torch.sigmoid((1 - ((ys - cy) / ry) ** 2 - ((xs - cx) / rx) ** 2) * 20)
        colour = rand(3, 1, 1) * 255
        image = image * (1 - inside) + colour * inside
    texture = F.interpolate(
        rand(1, 3, size // 4 + 1, size // 4 + 1), size=(size, size), mode="bilinear"
    )
    image = image + (texture[0] - 0.5) * 30 + torch.randn(3, size, size, generator=generator) * 4
    return image.clamp(0, 255)


def softmax_values(batch: int, classes: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth probability maps ``[batch, classes, size, size]``, like a network's output."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, 12, 12, generator=generator) * 3
    return torch.softmax(F.interpolate(logits, size=(size, size), mode="bilinear"), dim=1)


def _best_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def run(args: argparse.Namespace) -> int:
    """Print the benchmark table; returns 0."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = [tuple(int(v) for v in case.split("x")) for case in args.cases]
    print(
        f"weakseg filtering benchmark: K={args.classes}, sigma_rgb={args.sigma_rgb}, "
        f"sigma_xy={args.sigma_xy}, device={device}, threads={torch.get_num_threads()}, "
        f"best of {args.repeats}"
    )
    header = (
        f"{'size':>9} {'B':>2} {'vertices':>9} {'build ms':>9} {'filter ms':>10} {'total ms':>9}"
    )
    print(header + f" {'original':>9} {'target':>7} {'speed-up':>9}")
    for size, batch in cases:
        images = torch.stack([synthetic_image(size, seed=b) for b in range(batch)]).to(device)
        features = rgbxy_features(images, args.sigma_rgb, args.sigma_xy)
        values = softmax_values(batch, args.classes, size).to(device)
        lattice = PermutohedralLattice(features)
        lattice(values)  # warm-up
        build = _best_ms(lambda f=features: PermutohedralLattice(f), args.repeats, device)
        filtering = _best_ms(lambda w=lattice, v=values: w(v), args.repeats, device)
        total = build + filtering
        original = ORIGINAL_MS.get((size, batch))
        extra = (
            f" {original:>9.0f} {original / 3:>7.0f} {original / total:>8.1f}x"
            if original
            else f" {'-':>9} {'-':>7} {'-':>9}"
        )
        print(
            f"{f'{size}x{size}':>9} {batch:>2} {lattice.num_vertices:>9} {build:>9.1f} "
            f"{filtering:>10.1f} {total:>9.1f}" + extra
        )
    size = args.exact_size
    images = synthetic_image(size)[None].to(device)
    features = rgbxy_features(images, args.sigma_rgb, args.sigma_xy)
    values = softmax_values(1, args.classes, size).to(device)
    exact_ms = _best_ms(lambda: dense_gaussian_filter(values, features), 1, device)
    exact = dense_gaussian_filter(values.double(), features.double())
    approx = PermutohedralLattice(features.double())(values.double())
    error = float((approx - exact).norm() / exact.norm())
    print(
        f"exact O(N^2) filter at {size}x{size}, B=1: {exact_ms:.1f} ms; lattice relative L2 error "
        f"there: {error:.3f} (original C++: 0.38-0.45)"
    )
    return 0
