"""Which lattice backend runs: the automatic choice, its fallback warning, and the overrides."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from weakseg.filtering import BackendFallbackWarning, PermutohedralLattice, preferred_backend
from weakseg.filtering import lattice as lattice_module
from weakseg.filtering.lattice import numba_available

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba not installed")


@pytest.fixture
def fresh_fallback_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """No failure recorded and no warning issued yet in this process (restored afterwards)."""
    monkeypatch.setattr(lattice_module, "_numba_failure", None)
    monkeypatch.setattr(lattice_module, "_fallback_reported", False)


def _features() -> torch.Tensor:
    return torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))


@pytest.mark.usefixtures("fresh_fallback_state")
def test_broken_numba_import_falls_back_to_torch_once_with_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry makes the import of the numba backend fail, as a broken install would.
    monkeypatch.setitem(sys.modules, "weakseg.filtering._lattice_numba", None)
    with pytest.warns(BackendFallbackWarning, match="numba failed to import") as record:
        first = PermutohedralLattice(_features())
        second = PermutohedralLattice(_features())
    assert first.backend == second.backend == "torch"
    assert len(record) == 1  # said once per process
    assert "None in sys.modules" in str(record[0].message)  # the cause, verbatim
    with pytest.raises(ImportError, match="backend='numba' cannot run: numba failed to import"):
        PermutohedralLattice(_features(), backend="numba")


@needs_numba
@pytest.mark.usefixtures("fresh_fallback_state")
def test_numba_kernels_failing_at_first_build_fall_back_to_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from numba.core.errors import TypingError

    def failing_build(*args: object) -> None:
        raise TypingError("no LLVM target here")

    monkeypatch.setattr(lattice_module, "_numba_ops", failing_build)
    with pytest.raises(TypingError):  # asked for explicitly: the error itself
        PermutohedralLattice(_features(), backend="numba")
    with pytest.warns(BackendFallbackWarning, match="numba's kernels failed.*no LLVM target"):
        lattice = PermutohedralLattice(_features())
    assert lattice.backend == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and the failure is remembered
        assert PermutohedralLattice(_features()).backend == "torch"


@needs_numba
def test_input_errors_are_not_taken_for_numba_failures() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        PermutohedralLattice(torch.full((1, 2, 4, 4), float("nan")))
    assert lattice_module.numba_unusable_reason() is None


@needs_numba
def test_no_warning_where_numba_runs() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        assert PermutohedralLattice(_features()).backend == "numba"


def test_preferred_backend_and_environment_override_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    with preferred_backend("torch"):
        assert PermutohedralLattice(_features()).backend == "torch"
        # an explicit choice still wins
        assert PermutohedralLattice(_features(), backend="torch").backend == "torch"
    monkeypatch.setenv("WEAKSEG_LATTICE_BACKEND", "torch")
    assert PermutohedralLattice(_features()).backend == "torch"
    monkeypatch.setenv("WEAKSEG_LATTICE_BACKEND", "fast")
    with pytest.raises(ValueError, match="WEAKSEG_LATTICE_BACKEND must be"):
        PermutohedralLattice(_features())
    with pytest.raises(ValueError, match="backend must be"), preferred_backend("cuda"):  # type: ignore[arg-type]
        pass


@needs_numba
def test_preferred_backend_is_restored_after_the_block() -> None:
    with pytest.raises(RuntimeError), preferred_backend("torch"):
        raise RuntimeError
    assert PermutohedralLattice(_features()).backend == "numba"


def _fallback_in_child(queue) -> None:  # runs in a forked process
    torch.set_num_threads(1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        backend = PermutohedralLattice(_features()).backend
        PermutohedralLattice(_features())
    messages = [str(w.message) for w in record if issubclass(w.category, BackendFallbackWarning)]
    queue.put((backend, messages))


@needs_numba
def test_forked_worker_says_once_why_it_runs_torch() -> None:
    import multiprocessing

    from weakseg.filtering import _lattice_numba

    if _lattice_numba.numba.threading_layer() != "omp":
        pytest.skip("only the OpenMP threading layer is unsafe after fork")
    PermutohedralLattice(_features())  # numba's threads run in this (parent) process
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_fallback_in_child, args=(queue,))
    child.start()
    backend, messages = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert backend == "torch"
    assert len(messages) == 1 and "forked" in messages[0]
