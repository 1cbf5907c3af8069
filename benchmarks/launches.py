"""Operator launches and host synchronizations of the pure-PyTorch lattice and the dense losses.

Runs on the CPU and counts what a GPU would do: one lattice build, one filtering of K = 21
channels, and one forward + backward of the dense CRF, normalized cut and kernel cut losses, on
the PyTorch lattice backend (RGBXY features of a random 32x32 image, batch 2; the counts do not
depend on the size).

Operators ("ops"): the ``aten::`` operators called from Python (events of a ``torch.profiler``
trace with no ``aten::`` parent) that launch a kernel themselves or through the operators they
call, i.e. not views, allocations, no-op conversions or reading a scalar back (``NO_KERNEL``
below). Each is one kernel launch on a GPU, or a few (a sort or a sparse product may launch
several): the accepted proxy for launches. "leaves" counts the innermost kernel-launching
operators instead (how the CPU happens to decompose them, e.g. a CSR product into several).

Host synchronizations ("syncs"), each a point where a GPU's host waits for the device:

- ``scalar``: ``aten::_local_scalar_dense``, what ``.item()``, ``int()``, ``float()`` and
  ``bool()`` of a tensor run (also inside ATen, e.g. ``repeat_interleave`` without
  ``output_size``): a device-to-host copy of one number; not counted inside
  ``aten::_assert_async``, which reads its flag back on the CPU only;
- ``sizes``: operators whose output size depends on the data (``nonzero``, ``unique*``,
  ``masked_select``): ATen reads the size back before it can allocate;
- ``to host``: ``Tensor.tolist()``, ``.numpy()`` and ``.cpu()`` called from Python, counted by
  wrapping those methods (on the CPU ``tolist`` runs no ATen operator; on a GPU it is a
  device-to-host copy);
- ``to device``: tensors made from host data (``aten::lift_fresh``: ``torch.tensor(data)``,
  ``torch.from_numpy``), which the code makes on or moves to the features' device: a blocking
  host-to-device copy, after which PyTorch synchronizes the stream.

Some branches differ between the CPU and a GPU; the counts take the GPU's (``gpu_branches``):
the lattice takes the GPU's steps (``host_steps``: one sort of all vertex keys, the CSR
products); ``descending_rank`` broadcasts (it loops over column pairs on the CPU); the
finiteness passes of ``PermutohedralLattice.__call__`` over the values and of the feature
builders over the images are skipped (on the CPU they cost no synchronization); the losses
check their inputs' values with a device-side assertion (on the CPU they read the statistics
back, to name them). Run on an older tree, the script patches only the branches that tree has.

    python benchmarks/launches.py [--detail]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

import weakseg.filtering._lattice_torch as lattice_torch
import weakseg.filtering.features as features_module
import weakseg.filtering.lattice as lattice_module
import weakseg.losses._affinity as affinity_module
from weakseg.filtering import PermutohedralLattice, rgbxy_features
from weakseg.filtering.lattice import preferred_backend
from weakseg.losses import GaussianAffinity, dense_crf_loss, kernel_cut_loss, normalized_cut_loss

rank, inputs = lattice_torch.descending_rank, affinity_module.check_images_and_probs
NO_KERNEL = {
    "aten::_local_scalar_dense",
    "aten::_reshape_alias",
    "aten::alias",
    "aten::as_strided",
    "aten::detach",
    "aten::detach_",
    "aten::empty",
    "aten::empty_like",
    "aten::new_empty",
    "aten::new_empty_strided",
    "aten::empty_strided",
    "aten::expand",
    "aten::lift_fresh",
    "aten::permute",
    "aten::reshape",
    "aten::resize_",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::select",
    "aten::slice",
    "aten::squeeze",
    "aten::t",
    "aten::to",
    "aten::transpose",
    "aten::unflatten",
    "aten::unsqueeze",
    "aten::view",
    "aten::view_as",
    "aten::sparse_compressed_tensor",
    "aten::_sparse_compressed_tensor_unsafe",
    "aten::_nnz",
    "aten::scalar_tensor",
    "aten::crow_indices",
    "aten::col_indices",
    "aten::values",
    "aten::contiguous",
    "aten::flatten",
    "aten::expand_as",
    "aten::split",
    "aten::unbind",
    "aten::chunk",
    "aten::narrow",
    "aten::diagonal",
    "aten::numpy_T",
    "aten::is_nonzero",
    "aten::item",
}
SIZE_OPS = ("aten::nonzero", "aten::_unique", "aten::unique", "aten::masked_select")
K = 21


@contextlib.contextmanager
def counted_host_copies() -> Iterator[list[str]]:
    """Record the ``Tensor.tolist/numpy/cpu`` calls made inside the block."""
    calls: list[str] = []
    with contextlib.ExitStack() as patches:
        for name in ("tolist", "numpy", "cpu"):
            original = getattr(torch.Tensor, name)

            def recorded(self, *args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(self, *args, **kwargs)

            patches.enter_context(mock.patch.object(torch.Tensor, name, recorded))
        yield calls


@contextlib.contextmanager
def gpu_branches() -> Iterator[None]:
    """Run the branches that a GPU takes (see the module docstring)."""

    def values_unchecked(*args, **kwargs):
        return check_values(*args, **{**kwargs, "finite": False})

    check_values = lattice_module.check_values
    patches = [
        (lattice_torch, "descending_rank", functools.partial(rank, broadcast=True)),
        (lattice_module, "check_values", values_unchecked),
    ]
    if hasattr(lattice_torch, "host_steps"):  # the CPU's own build and products, since
        patches.append((lattice_torch, "host_steps", lambda device: False))
    if hasattr(features_module, "check_finite_on_cpu"):  # before, it checked on every device
        patches.append((features_module, "check_finite_on_cpu", lambda name, value: None))
    if "on_device" in inspect.signature(inputs).parameters:  # not before the device checks
        patches.append(
            (affinity_module, "check_images_and_probs", functools.partial(inputs, on_device=True))
        )
    with contextlib.ExitStack() as stack:
        for owner, name, replacement in patches:
            stack.enter_context(mock.patch.object(owner, name, replacement))
        yield


def _launches(event) -> bool:
    """Whether ``event`` or an operator it calls launches a kernel."""
    own = event.name.startswith("aten::") and event.name not in NO_KERNEL
    return own or any(_launches(child) for child in event.cpu_children)


def _within(event, name: str) -> bool:
    """Whether ``event`` runs inside an operator called ``name``."""
    parent = event.cpu_parent
    while parent is not None and parent.name != name:
        parent = parent.cpu_parent
    return parent is not None


def count(work: Callable[[], object]) -> tuple[dict[str, int], collections.Counter[str]]:
    """Ops and syncs of one call of ``work`` (after one warm-up call)."""
    with gpu_branches():
        work()
        with counted_host_copies() as host, profile(activities=[ProfilerActivity.CPU]) as trace:
            work()
    events = [e for e in trace.events() if e.name.startswith("aten::")]
    names = [e.name for e in events]
    top = collections.Counter(
        e.name
        for e in events
        if not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))
        and _launches(e)
    )
    leaves = [
        e.name
        for e in events
        if e.name not in NO_KERNEL and not any(_launches(c) for c in e.cpu_children)
    ]
    numbers = {
        "ops": sum(top.values()),
        "leaves": len(leaves),
        "scalar": sum(
            e.name == "aten::_local_scalar_dense" and not _within(e, "aten::_assert_async")
            for e in events
        ),
        "sizes": sum(n.startswith(SIZE_OPS) for n in names),
        "to host": len(host),
        "to device": names.count("aten::lift_fresh"),
    }
    numbers["syncs"] = sum(numbers[k] for k in ("scalar", "sizes", "to host", "to device"))
    return numbers, top


def cases() -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator) * 255
    features = rgbxy_features(images, sigma_rgb=15.0, sigma_xy=5.0)
    logits = torch.randn(2, K, 32, 32, generator=generator, requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    values = torch.rand(2, K, 32, 32, generator=generator)
    with preferred_backend("torch"), gpu_branches():  # built as on a GPU
        lattice = PermutohedralLattice(features, backend="torch")
        affinity = GaussianAffinity(images, sigma_xy=5.0)

    def loss_call(function: Callable[..., torch.Tensor], **options: object) -> Callable[[], None]:
        def run() -> None:
            with preferred_backend("torch"):
                loss = function(images, probs, sigma_xy=5.0, **options)
            torch.autograd.grad(loss, probs)

        return run

    return {
        "lattice build": lambda: PermutohedralLattice(features, backend="torch"),
        "lattice build, accuracy=1": lambda: PermutohedralLattice(
            features, backend="torch", accuracy=1
        ),
        f"lattice filter (K={K})": lambda: lattice(values),
        "dense CRF fwd+bwd (builds)": loss_call(dense_crf_loss),
        "dense CRF fwd+bwd (prebuilt)": loss_call(dense_crf_loss, affinity=affinity),
        "normalized cut fwd+bwd": loss_call(normalized_cut_loss),
        "kernel cut fwd+bwd": loss_call(kernel_cut_loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detail", action="store_true", help="list the ops of each case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns = ("ops", "leaves", "syncs", "scalar", "sizes", "to host", "to device")
    print(f"{'case':<30}" + "".join(f"{c:>10}" for c in columns))
    for name, work in cases().items():
        numbers, launches = count(work)
        print(f"{name:<30}" + "".join(f"{numbers[c]:>10}" for c in columns))
        if args.detail:
            for op, n in launches.most_common():
                print(f"{'':<8}{n:>5}  {op}")


if __name__ == "__main__":
    main()
