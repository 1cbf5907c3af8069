"""Shared test fixtures: the devices to run on, the path of the real data set, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# CI and developers have ../shared next to the repository; users do not.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every test that takes ``device`` runs once per available device."""
    return torch.device(request.param)


@pytest.fixture
def acdc_root() -> Path:
    """The ACDC scribble data set, or a skip when ``../shared`` is absent."""
    root = SHARED_DATA / "acdc-scribble"
    if not root.is_dir():
        pytest.skip(f"real data not available at {root}")
    return root


@pytest.fixture
def one_thread():
    """torch limited to one thread during the test (the machine has 2 shared cores, and
    oversubscribed convolutions are much slower); use with ``pytest.mark.usefixtures``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
