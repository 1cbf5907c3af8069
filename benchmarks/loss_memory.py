"""Peak memory of one forward+backward of the regularized losses on the issue's large inputs.

Cases: a 1024x1024 RGB image with K = 21 (B = 1) and a 128^3 gray volume with K = 4, for the
dense CRF, normalized cut and kernel cut losses (lattice backend). Each case runs in its own
process; on CPU the peak resident set size (ru_maxrss) is reported together with that of the same
process just before the loss (inputs allocated), on CUDA torch.cuda.max_memory_allocated.

    python benchmarks/loss_memory.py            # every case, one subprocess each
    python benchmarks/loss_memory.py --case rgb1024-crf
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from weakseg.losses import dense_crf_loss, kernel_cut_loss, normalized_cut_loss

LOSSES = {
    "crf": lambda i, p, s: dense_crf_loss(i, p, sigma_rgb=15.0, sigma_xy=s),
    "nc": lambda i, p, s: normalized_cut_loss(i, p, sigma_rgb=15.0, sigma_xy=s),
    "kc": lambda i, p, s: kernel_cut_loss(i, p, sigma_rgb=15.0, sigma_xy=s, nc_sigma_xy=s / 2),
}
SHAPES = {  # (image shape, classes, sigma_xy)
    "rgb1024": ((1, 3, 1024, 1024), 21, 80.0),
    "gray128cube": ((1, 1, 128, 128, 128), 4, 10.0),
}
CASES = [f"{shape}-{loss}" for shape in SHAPES for loss in LOSSES]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(case: str, device: str) -> None:
    shape_name, loss_name = case.split("-")
    shape, classes, sigma_xy = SHAPES[shape_name]
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(*shape, generator=generator) * 255).to(device)
    logits = torch.randn(shape[0], classes, *shape[2:], generator=generator).to(device)
    logits.requires_grad_()
    before = rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    start = time.perf_counter()
    LOSSES[loss_name](images, logits.softmax(dim=1), sigma_xy).backward()
    seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"{case:22s} cuda peak {peak:9.0f} MiB (inputs {base:.0f} MiB) {seconds:7.2f} s")
    else:
        print(
            f"{case:22s} cpu peak RSS {rss_mib():9.0f} MiB (before the loss {before:.0f} MiB) "
            f"{seconds:7.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.case:
        run_case(args.case, args.device)
        return
    for case in CASES:
        command = [sys.executable, __file__, "--case", case, "--device", args.device]
        subprocess.run(command, check=False)


if __name__ == "__main__":
    main()
