"""One prepared check of everything that runs on a GPU, printed as one table.

Rows (each with its time and, on CUDA, its peak GPU memory; a failing row says why and the
script exits 1):

1. ``pytest``: the device-parametrized test cases of the filtering engine, the losses and the
   CRF for this device (``-k cuda`` on a GPU; on the CPU one small selection).
2. ``lattice``: build + filter of K = 21 channels, RGBXY sigma_rgb 15 / sigma_xy 100 (the
   backend "auto" picks: PyTorch on a GPU), and the launch count of one build and one filter.
3. ``dense CRF``: the loss forward + backward at the same sizes; 513² B12 is the paper's
   DeepLab recipe (batch 12 of 513 crops).
4. ``mean field``: dense CRF inference, 5 iterations.
5. ``train step``: one DeepLabV3+ ResNet-101 step (random init: nothing is downloaded) under AMP
   (float16 + GradScaler on CUDA; on the CPU a small U-Net in bfloat16), partial CE alone and
   with the dense CRF loss (weight 2e-9, "rloss" normalization, scale_factor 0.5, as the
   paper's recipe); the loss's share of the step.
6. ``DDP``: a one-process DistributedDataParallel step (NCCL on CUDA, gloo on the CPU).

On CUDA the sizes are 321² / 512² at B 1 / 4 and 513² B12, within ~5 minutes on one GPU.
``--device cpu`` runs the same suite at small sizes in well under a minute (CI runs it so).

    python benchmarks/gpu_check.py                 # cuda if available
    python benchmarks/gpu_check.py --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from weakseg.cli.bench import softmax_values, synthetic_image
from weakseg.crf import dense_crf_inference
from weakseg.filtering import PermutohedralLattice, rgbxy_features
from weakseg.losses import dense_crf_loss, partial_cross_entropy
from weakseg.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = {"sigma_rgb": 15.0, "sigma_xy": 100.0}
# (size, batch) per device kind; the last one is the paper's recipe on a GPU.
CASES = {
    "cuda": ((321, 1), (321, 4), (512, 1), (512, 4), (513, 12)),
    "cpu": ((48, 1), (48, 2), (65, 3)),
}
# (size, batch, model, model options); on the CPU a small U-Net stands in for the ResNet-101
# (bfloat16 convolutions of a ResNet-101 take minutes there).
TRAIN = {
    "cuda": (321, 4, "deeplabv3plus_resnet101", {}),
    "cpu": (32, 2, "unet", {"base_channels": 4}),
}
TESTS = {
    "cuda": ["tests/filtering", "tests/losses", "tests/crf", "-k", "cuda"],
    "cpu": ["tests/filtering/test_lattice.py::test_flat_layout_and_reuse"],
}


@dataclass
class Row:
    check: str
    case: str
    ms: float | None = None
    peak_mib: float | None = None
    note: str = ""
    ok: bool = True


@dataclass
class Report:
    device: torch.device
    rows: list[Row] = field(default_factory=list)

    @contextlib.contextmanager
    def row(self, check: str, case: str) -> Iterator[Row]:
        """A row; an exception inside fails the row (with its message), not the script."""
        row = Row(check, case)
        self.rows.append(row)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield row
        except Exception as error:  # a failed check is reported, and the next one runs
            row.ok, row.note = False, f"FAILED {type(error).__name__}: {error}"[:160]
            traceback.print_exc(file=sys.stderr)
        if self.device.type == "cuda":
            row.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        print(format_row(row), flush=True)


def format_row(row: Row) -> str:
    ms = f"{row.ms:10.1f}" if row.ms is not None else f"{'-':>10}"
    peak = f"{row.peak_mib:9.0f}" if row.peak_mib is not None else f"{'-':>9}"
    return f"{row.check:<12} {row.case:<22} {ms} {peak}  {row.note}"


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up, synchronizing around each run."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3

    once()
    return statistics.median(once() for _ in range(repeats))


def count_ops(fn: Callable[[], object]) -> int:
    """Top-level ATen operations of one run of ``fn`` (each one kernel launch at most)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(
        1
        for event in prof.events()
        if event.name.startswith("aten::")
        and (event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::"))
    )


def inputs(size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([synthetic_image(size, seed=b) for b in range(batch)]).to(device)
    return images, softmax_values(batch, 21, size).to(device)


def check_tests(report: Report, kind: str) -> None:
    with report.row("pytest", f"{kind} test cases") as row:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS[kind]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        row.ms = (time.perf_counter() - start) * 1e3
        lines = (result.stdout.strip() or result.stderr.strip()).splitlines()
        row.note = lines[-1] if lines else ""
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
            raise RuntimeError(f"pytest exit {result.returncode}: {row.note}")


def check_lattice(report: Report, size: int, batch: int, repeats: int) -> None:
    device = report.device
    with report.row("lattice", f"{size}x{size} B{batch} K21") as row:
        images, values = inputs(size, batch, device)
        features = rgbxy_features(images, **SIGMAS)
        lattice = PermutohedralLattice(features)
        row.ms = timed_ms(lambda: PermutohedralLattice(features)(values), device, repeats)
        if batch == 1:
            ops = (
                count_ops(lambda: PermutohedralLattice(features)),
                count_ops(lambda: lattice(values)),
            )
            row.note = f"{lattice.backend}; ops build {ops[0]}, filter {ops[1]}"
        else:
            row.note = lattice.backend


def check_loss(report: Report, size: int, batch: int, repeats: int) -> None:
    device = report.device
    with report.row("dense CRF", f"{size}x{size} B{batch} K21") as row:
        images, values = inputs(size, batch, device)
        probs = values.clone().requires_grad_()

        def step() -> None:
            probs.grad = None
            dense_crf_loss(images, probs, **SIGMAS).backward()

        row.ms = timed_ms(step, device, repeats)
        assert probs.grad is not None and bool(torch.isfinite(probs.grad).all())
        row.note = "fwd+bwd"


def check_mean_field(report: Report, size: int, repeats: int) -> None:
    device = report.device
    with report.row("mean field", f"{size}x{size} B1 K21 5 it") as row:
        images, values = inputs(size, 1, device)
        logits = values.log()
        q = dense_crf_inference(logits, images)
        row.ms = timed_ms(lambda: dense_crf_inference(logits, images), device, repeats)
        assert torch.allclose(q.sum(dim=1), torch.ones_like(q[:, 0]), atol=1e-4)


def train_step_fn(
    device: torch.device, size: int, batch: int, name: str, options: dict, with_crf: bool
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(name, 21, options=options or None).to(device)  # random init
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)
    images, _ = inputs(size, batch, device)
    normalized = (images / 255 - 0.45) / 0.225
    labels = torch.full((batch, size, size), 255, dtype=torch.int64, device=device)
    labels[:, size // 3, size // 4 : size // 2] = 1  # a scribble
    labels[:, 2 * size // 3, size // 4 : size // 2] = 0
    dtype = torch.float16 if cuda else torch.bfloat16

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            logits = model(normalized)
            loss = partial_cross_entropy(logits, labels)
        if with_crf:
            probs = F.softmax(logits.float(), dim=1)
            loss = loss + 2e-9 * dense_crf_loss(
                images, probs, normalization="rloss", scale_factor=0.5, **SIGMAS
            )
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def check_train_step(report: Report, kind: str, repeats: int) -> None:
    device = report.device
    size, batch, name, options = TRAIN[kind]
    times = {}
    for with_crf in (False, True):
        label = "+ dense CRF" if with_crf else "pCE"
        with report.row("train step", f"{size}x{size} B{batch} {label}") as row:
            step = train_step_fn(device, size, batch, name, options, with_crf)
            row.ms = times[with_crf] = timed_ms(step, device, repeats)
            row.note = f"{name}, AMP"
            if with_crf and False in times:
                share = (times[True] - times[False]) / times[True]
                row.note += f"; dense CRF {share:.0%} of the step"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_ddp(report: Report) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    device = report.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    with report.row("DDP", f"1 process, {backend}") as row:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        dist.init_process_group(backend, rank=0, world_size=1)
        try:
            torch.manual_seed(0)
            model = build_model("unet", 3, options={"base_channels": 4}).to(device)
            ddp = DistributedDataParallel(
                model, device_ids=[device.index or 0] if device.type == "cuda" else None
            )
            images, _ = inputs(32, 2, device)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-2)
            start = time.perf_counter()
            probs = F.softmax(ddp(images / 255), dim=1)
            loss = dense_crf_loss(images, probs, **SIGMAS)
            loss.backward()
            optimizer.step()
            tensor = torch.ones(1, device=device)
            dist.all_reduce(tensor)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row.ms = (time.perf_counter() - start) * 1e3
            assert float(tensor) == 1.0
            row.note = f"step + all_reduce, loss {loss.item():.4f}"
        finally:
            dist.destroy_process_group()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest row")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    return parser


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if kind == "cuda" else 1)
    report = Report(device)
    name = torch.cuda.get_device_name(device) if kind == "cuda" else f"CPU, {args.threads} threads"
    print(f"weakseg GPU check on {device} ({name}), torch {torch.__version__}, median of {repeats}")
    print(f"{'check':<12} {'case':<22} {'ms':>10} {'peak MiB':>9}  note")
    start = time.perf_counter()
    if not args.skip_tests:
        check_tests(report, kind)
    for size, batch in CASES[kind]:
        check_lattice(report, size, batch, repeats)
    for size, batch in CASES[kind]:
        check_loss(report, size, batch, repeats)
    check_mean_field(report, CASES[kind][0][0], repeats)
    check_train_step(report, kind, repeats)
    check_ddp(report)
    failed = [row for row in report.rows if not row.ok]
    print(
        f"{len(report.rows) - len(failed)}/{len(report.rows)} checks passed in "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
