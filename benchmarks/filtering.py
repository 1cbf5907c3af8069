"""Filtering-engine benchmark: lattice build + filtering of K = 21 channels at 321² and 512²,
batch 1 and 4 (RGBXY, sigma_rgb = 15, sigma_xy = 100, 2 threads), next to the original C++
implementation's times from DESIGN.md, plus the exact filter at a small size.

    python benchmarks/filtering.py [--cases 321x1 512x4] [--threads 2] [--device cuda]
"""

import sys

from weakseg.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
