"""benchmarks/gpu_check.py runs its whole suite on the CPU at small sizes and reports every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_passes_on_the_cpu() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parents[1],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:-1]]
    for check in ("pytest", "lattice", "dense", "mean", "train", "DDP"):
        assert check in rows, f"no {check} row in:\n{result.stdout}"
    assert "FAILED" not in result.stdout
    assert result.stdout.splitlines()[-1].startswith("11/11 checks passed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_gpu_check_refuses_cuda_without_cuda() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "CUDA is not available" in result.stderr
