"""Accuracy of the permutohedral lattice against the exact Gaussian filter.

Relative L2 error ``|W_lattice v - W v| / |W v|`` on 64x64 crops of scikit-image's astronaut and
coffee photos (RGBXY, sigma_rgb = 15, sigma_xy in {5, 80}) for random, softmax-like and all-ones
channels, the ratio of mean degrees ``W 1`` (1 = unbiased), and the symmetry gap
``|<u, W v> - <W u, v>| / |<u, W v>|``, for each available backend. The original C++ lattice of
the rloss code: relative error 0.38-0.45, degree ratio 0.55-0.62 (DESIGN.md).

    python benchmarks/filtering_accuracy.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from skimage import data

from weakseg.filtering import PermutohedralLattice, dense_gaussian_filter, rgbxy_features
from weakseg.filtering.lattice import numba_available

CROPS = {"astronaut": (data.astronaut, (100, 180)), "coffee": (data.coffee, (150, 250))}


def crop(name: str) -> torch.Tensor:
    load, (top, left) = CROPS[name]
    pixels = torch.from_numpy(load()[top : top + 64, left : left + 64].copy())
    return pixels.permute(2, 0, 1).double()[None]


def channels() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) * 3
    return {
        "random": torch.rand(1, 4, 64, 64, generator=generator, dtype=torch.float64),
        "softmax": torch.softmax(F.interpolate(logits, size=64, mode="bilinear"), dim=1),
        "ones": torch.ones(1, 1, 64, 64, dtype=torch.float64),
    }


def main() -> None:
    backends = ["torch"] + (["numba"] if numba_available() else [])
    print(
        f"{'image':>10} {'sigma_xy':>8} {'backend':>7} {'random':>7} {'softmax':>8} {'ones':>6} "
        f"{'degree':>7} {'sym gap':>8}"
    )
    for name in CROPS:
        for sigma_xy in (5.0, 80.0):
            features = rgbxy_features(crop(name), 15.0, sigma_xy)
            values = channels()
            exact = {kind: dense_gaussian_filter(v, features) for kind, v in values.items()}
            for backend in backends:
                lattice = PermutohedralLattice(features, backend=backend)
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
                    f"{name:>10} {sigma_xy:>8g} {backend:>7} {errors[0]:>7.3f} {errors[1]:>8.3f} "
                    f"{errors[2]:>6.3f} {degree:>7.3f} {gap:>8.1e}"
                )


if __name__ == "__main__":
    main()
