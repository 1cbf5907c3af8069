r"""Mean-field inference for the fully connected CRF (Krähenbühl & Koltun, NIPS 2011).

The CRF over labels :math:`x_p \in \{0..K-1\}` has the energy

.. math::
    E(x) = \sum_p \psi_u(x_p) + \sum_{p < q} \mu(x_p, x_q)
           \left[ w^{(1)} k^{(1)}_{pq} + w^{(2)} k^{(2)}_{pq} \right],
    \quad \psi_u(x_p = l) = -\log \mathrm{softmax}(\mathrm{logits})_{p,l},

with the appearance kernel
:math:`k^{(1)}_{pq} = \exp(-|p-q|^2 / 2\theta_\alpha^2 - |I_p-I_q|^2 / 2\theta_\beta^2)`, the
smoothness kernel :math:`k^{(2)}_{pq} = \exp(-|p-q|^2 / 2\theta_\gamma^2)` and a label
compatibility (cost) :math:`\mu` (Potts: :math:`\mu = 1 - I`). Mean field looks for the factorized
:math:`Q` minimizing the free energy (:func:`mean_field_energy`)

.. math::
    F(Q) = \sum_p \langle Q_p, \psi_u(p) \rangle
         + \tfrac12 \sum_{p \neq q} \tilde k_{pq}\, Q_p^\top \mu\, Q_q
         + \sum_{p,l} Q_p(l) \log Q_p(l)

by parallel updates :math:`Q_p \leftarrow \mathrm{softmax}(-\psi_u(p) - \mu\, m_p)` with messages
:math:`m_p = \sum_m w^{(m)} \sum_{q \neq p} \tilde k^{(m)}_{pq} Q_q`. All messages are Gaussian
filterings of Q; each kernel gets one filter (permutohedral lattice or exact sum) per image batch,
reused by every iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg._validation import (
    check_labels,
    check_logits_and_images,
    check_n_iter,
    check_valid_mask,
)
from weakseg.crf._kernels import (
    GaussianMessages,
    build_kernels,
    check_compat,
)
from weakseg.crf.kernel_params import KernelParams, check_kernel_parameters
from weakseg.filtering import PermutohedralLattice
from weakseg.filtering.lattice import numba_usable

__all__ = ["DenseCRF", "dense_crf_inference", "mean_field_energy"]

# Step sizes tried by the line search, largest first (the plain update is step 1).
_LINE_SEARCH_STEPS = tuple(0.5**j for j in range(11))


class _Messages:
    r"""The summed messages :math:`M(q) = \sum_m w^{(m)} (S_m K_m S_m q - s_m^2 q)` of prepared
    kernels, one filtering per kernel; the scalings, weights and self terms are fused into
    multiply-adds (:meth:`GaussianMessages.__call__` term by term, with fewer passes)."""

    def __init__(self, kernels: Sequence[tuple[float, GaussianMessages]]) -> None:
        self.terms = [(k, w if k.scale is None else w * k.scale) for w, k in kernels]
        self.neg_self_weight = -sum(w * k.self_weight for w, k in kernels)  # Tensor or number

    def __call__(self, q: Tensor, base: Tensor | None = None) -> Tensor:
        """``base + M(q)`` (``M(q)`` when ``base`` is ``None``), a new tensor."""
        acc = base
        for i, (kernel, coef) in enumerate(self.terms):
            scaled = q if kernel.scale is None else q * kernel.scale
            acc = _add_scaled(acc, kernel.filter(scaled), coef, in_place=i > 0)
        return _add_scaled(acc, q, self.neg_self_weight, in_place=bool(self.terms))


def _add_scaled(acc: Tensor | None, x: Tensor, coef: Tensor | float, *, in_place: bool) -> Tensor:
    """``acc + coef * x`` (``coef * x`` when ``acc`` is ``None``), in place on ``acc`` or new.
    In place is autograd-safe: no backward formula of these ops needs ``acc``."""
    if acc is None:
        return x * coef
    if isinstance(coef, Tensor):
        return acc.addcmul_(x, coef) if in_place else torch.addcmul(acc, x, coef)
    return acc.add_(x, alpha=coef) if in_place else torch.add(acc, x, alpha=coef)


def _softmax_(logits: Tensor, in_place: bool) -> Tensor:
    """Softmax over dim 1 that overwrites ``logits`` with its exponentials, and with the result
    too if ``in_place`` (not under autograd, which keeps the exponentials for backward)."""
    # Shifting by a constant per pixel leaves softmax unchanged, so the max needs no gradient.
    exp = logits.sub_(logits.detach().amax(dim=1, keepdim=True)).exp_()
    total = exp.sum(dim=1, keepdim=True)
    return exp.div_(total) if in_place else exp / total


def _pairwise(q: Tensor, messages: _Messages, compat: Tensor | None) -> Tensor:
    """Pairwise potential ``mu M(q)``: Tensor[B, K, *spatial], linear in ``q``; Potts when
    ``compat`` is ``None``, ``(1 - I) M = sum_l M_l - M``."""
    if not messages.terms:
        return torch.zeros_like(q)
    m = messages(q)
    if compat is None:
        return m.sum(dim=1, keepdim=True) - m
    return torch.einsum("kl,bl...->bk...", compat, m)  # (B, K, *spatial)


def _free_energy(
    q: Tensor, unary: Tensor, pairwise: Tensor, valid: Tensor | None
) -> Tensor:  # (B,)
    q = q.clamp_min(0)
    terms = q * unary + 0.5 * q * pairwise + torch.xlogy(q, q)  # (B, K, *spatial)
    if valid is not None:
        terms = terms * valid
    return terms.flatten(1).sum(dim=1)


def _clamp(q: Tensor, fixed: tuple[Tensor, Tensor] | None) -> Tensor:
    if fixed is None:
        return q
    labeled, onehot = fixed
    return torch.where(labeled, onehot, q)


def _fixed_labels(
    labels: Tensor | None, logits: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor] | None:
    if labels is None:
        return None
    labeled = (labels != ignore_index).unsqueeze(1)  # (B, 1, *spatial)
    ids = torch.where(labeled.squeeze(1), labels, torch.zeros_like(labels)).long()
    onehot = F.one_hot(ids, logits.shape[1]).movedim(-1, 1).to(logits.dtype)  # (B, K, *spatial)
    return labeled, onehot


def _potts_updates(
    logits: Tensor,
    q: Tensor,
    messages: _Messages,
    n_iter: int,
    fixed: tuple[Tensor, Tensor] | None,
) -> Tensor:
    r"""``n_iter`` plain updates with Potts compatibility, from ``q``.

    The pairwise term :math:`\sum_l M_l - M` shifts the K logits of a pixel by the same
    :math:`\sum_l M_l`, which softmax ignores: the update is ``softmax(logits + M(q))``, one
    multiply-add chain and no K x K product. Without autograd, lattice kernels take the flat
    path (:func:`_flat_potts_updates`).
    """
    no_grad = not (torch.is_grad_enabled() and logits.requires_grad)
    lattices = all(isinstance(kernel.filter, PermutohedralLattice) for kernel, _ in messages.terms)
    if no_grad and lattices:
        return _flat_potts_updates(logits, q, messages, n_iter, fixed)
    for _ in range(n_iter):
        q = _clamp(_softmax_(messages(q, base=logits), in_place=no_grad), fixed)
    return q


def _flat_potts_updates(
    logits: Tensor,
    q: Tensor,
    messages: _Messages,
    n_iter: int,
    fixed: tuple[Tensor, Tensor] | None,
) -> Tensor:
    r""":func:`_potts_updates` without autograd, on lattice kernels only, in flat ``[B, K, N]``
    buffers in the lattices' compute dtype: the scalings and weights of each kernel go into its
    lattice's splat and slice (:meth:`PermutohedralLattice.filter_flat`), which accumulates the
    messages into one buffer, and the update ``q <- softmax(logits + M(q) - s^2 q)`` with the
    clamping is one pass (:func:`weakseg.crf._potts_numba.potts_update_` for float32 on the CPU
    with numba; PyTorch operations otherwise). Q is updated in place."""
    batch, classes = q.shape[:2]
    dtype = messages.terms[0][0].filter.dtype  # the lattices' compute dtype
    flat = (batch, classes, -1)
    logits_flat = logits.detach().to(dtype).reshape(flat).contiguous()
    q_flat = q.detach().to(dtype).reshape(flat).contiguous()
    total = torch.empty_like(q_flat)  # the summed messages
    filterings = []  # (lattice, in_weight, out_weight) per kernel, weights [B, N] or None
    for kernel, coef in messages.terms:
        in_weight = None if kernel.scale is None else kernel.scale.to(dtype).reshape(batch, -1)
        if isinstance(coef, Tensor):
            out_weight = coef.to(dtype).reshape(batch, -1)
        else:
            out_weight = torch.full((batch, q_flat.shape[2]), coef, dtype=dtype, device=q.device)
        filterings.append((kernel.filter, in_weight, out_weight))
    neg_self_weight = torch.as_tensor(messages.neg_self_weight, dtype=dtype, device=q.device)
    neg_self_weight = neg_self_weight.expand(batch, 1, *q.shape[2:]).reshape(batch, -1)
    fused = dtype == torch.float32 and q.device.type == "cpu" and numba_usable()
    clamp = None  # for the PyTorch update: (labeled, one-hot) in the flat layout
    if fused:
        from weakseg.crf._potts_numba import potts_update_

        neg_self_weight = neg_self_weight.contiguous()
        label_array = np.empty((0, 0), np.int32)
        if fixed is not None:
            labeled, onehot = fixed
            labels = torch.where(labeled.squeeze(1), onehot.argmax(dim=1), -1)
            label_array = labels.reshape(batch, -1).to(torch.int32).numpy()
    elif fixed is not None:
        labeled, onehot = fixed
        clamp = (labeled.reshape(batch, 1, -1), onehot.to(dtype).reshape(flat).contiguous())
    for _ in range(n_iter):
        for i, (lattice, in_weight, out_weight) in enumerate(filterings):
            lattice.filter_flat(
                q_flat, in_weight=in_weight, out_weight=out_weight, out=total, accumulate=i > 0
            )
        if fused:
            potts_update_(
                logits_flat.numpy(),
                total.numpy(),
                q_flat.numpy(),
                neg_self_weight.numpy(),
                label_array,
            )
        else:  # the next messages go into the old Q's buffer
            update = total.add_(logits_flat).addcmul_(q_flat, neg_self_weight[:, None])
            q_flat, total = _clamp(_softmax_(update, in_place=True), clamp), q_flat
    return q_flat.reshape(q.shape).to(logits.dtype)


def run_mean_field(
    logits: Tensor,
    kernels: Sequence[tuple[float, GaussianMessages]],
    compat: Tensor | None,
    n_iter: int,
    *,
    fixed: tuple[Tensor, Tensor] | None = None,
    valid: Tensor | None = None,
    line_search: bool = False,
    energies: list[Tensor] | None = None,
) -> Tensor:
    """The mean-field loop on prepared kernels; differentiable w.r.t. ``logits`` and ``compat``.

    ``energies``, when given, receives the free energy ``[B]`` of the initial Q and after every
    iteration (one extra filtering per iteration unless ``line_search``, which needs it anyway).
    """
    q = _clamp(torch.softmax(logits, dim=1), fixed)
    messages = _Messages(kernels)
    unary = -torch.log_softmax(logits, dim=1) if energies is not None or line_search else None
    if not kernels or n_iter == 0:
        if energies is not None:
            energies.append(_free_energy(q, unary, _pairwise(q, messages, compat), valid))
        return q
    if not line_search and compat is None and energies is None:
        return _potts_updates(logits, q, messages, n_iter, fixed)
    if not line_search:
        for _ in range(n_iter):
            pairwise = _pairwise(q, messages, compat)
            if energies is not None:
                energies.append(_free_energy(q, unary, pairwise, valid))
            q = _clamp(torch.softmax(logits - pairwise, dim=1), fixed)
        if energies is not None:
            energies.append(_free_energy(q, unary, _pairwise(q, messages, compat), valid))
        return q
    # Damped parallel updates q <- q + a (x - q): x - q is a descent direction of F, and by
    # linearity pairwise(q + a d) = pairwise(q) + a pairwise(d), so trying several steps a costs
    # no extra filtering. Each image takes the largest a in 1, 1/2, ..., 2^-10 that does not
    # increase its energy (a = 0 if none does, e.g. at a fixed point up to rounding).
    pairwise = _pairwise(q, messages, compat)
    energy = _free_energy(q, unary, pairwise, valid)
    if energies is not None:
        energies.append(energy)
    view = (-1,) + (1,) * (q.ndim - 1)
    for _ in range(n_iter):
        direction = _clamp(torch.softmax(logits - pairwise, dim=1), fixed) - q
        pairwise_direction = _pairwise(direction, messages, compat)
        step = torch.zeros_like(energy)
        best = energy
        pending = torch.ones_like(energy, dtype=torch.bool)
        for a in _LINE_SEARCH_STEPS:
            trial = _free_energy(q + a * direction, unary, pairwise + a * pairwise_direction, valid)
            take = pending & (trial <= energy)
            step = torch.where(take, torch.full_like(step, a), step)
            best = torch.where(take, trial, best)
            pending = pending & ~take
            if not bool(pending.any()):
                break
        q = q + step.view(view) * direction
        pairwise = pairwise + step.view(view) * pairwise_direction
        energy = best
        if energies is not None:
            energies.append(energy)
    return q


def _prepare(
    logits: Tensor,
    images: Tensor,
    params: KernelParams,
    *,
    n_iter: int,
    compat: Tensor | None,
    normalization: str,
    spacing: Sequence[float] | None,
    backend: str,
    labels: Tensor | None,
    ignore_index: int,
    valid_mask: Tensor | None,
    symmetric: bool = True,
):
    """Check the inputs and build the kernels: ``(kernels, compat, fixed labels, valid)``."""
    check_logits_and_images(logits, images)
    check_n_iter(n_iter)
    params = check_kernel_parameters(*params, normalization, backend)
    compat = check_compat(compat, logits.shape[1], logits)
    if labels is not None:
        check_labels(labels, logits, ignore_index)
    valid = None
    if valid_mask is not None:
        check_valid_mask(valid_mask, logits, "logits")
        valid = valid_mask.unsqueeze(1).to(logits.dtype)  # (B, 1, *spatial)
    kernels = build_kernels(
        images.detach().to(logits.dtype),
        params,
        normalization=normalization,
        spacing=spacing,
        backend=backend,
        mask=valid,
        symmetric=symmetric,
    )
    return kernels, compat, _fixed_labels(labels, logits, ignore_index), valid


def dense_crf_inference(
    logits: Tensor,
    images: Tensor,
    *,
    n_iter: int = 5,
    w_bilateral: float = 4.0,
    theta_alpha: float = 49.0,
    theta_beta: float = 5.0,
    w_gaussian: float = 3.0,
    theta_gamma: float = 3.0,
    compat: Tensor | None = None,
    normalization: str = "symmetric",
    spacing: Sequence[float] | None = None,
    backend: str = "lattice",
    labels: Tensor | None = None,
    ignore_index: int = 255,
    valid_mask: Tensor | None = None,
    line_search: bool = False,
) -> Tensor:
    r"""Mean-field inference of the fully connected CRF (Krähenbühl & Koltun 2011).

    Starting from :math:`Q = \mathrm{softmax}(\mathrm{logits})`, ``n_iter`` parallel updates

    .. math::
        Q_p \leftarrow \mathrm{softmax}\Big(\mathrm{logits}_p - \mu \sum_m w^{(m)}
            \sum_{q \neq p} \tilde k^{(m)}_{pq} Q_q\Big)

    with the appearance kernel (``w_bilateral``, ``theta_alpha``, ``theta_beta``) and the
    smoothness kernel (``w_gaussian``, ``theta_gamma``). The unary is
    :math:`-\log\mathrm{softmax}(\mathrm{logits})`, which softmax turns back into the logits.

    Message passing excludes the self term: each message is :math:`\tilde K Q - \mathrm{diag}
    (\tilde K)\, Q` (:math:`K Q - Q` without normalization), the paper's
    :math:`\sum_{q \neq p}`, as in Krähenbühl & Koltun's algorithm. ``normalization="symmetric"``
    uses :math:`\tilde K = D^{-1/2} K D^{-1/2}`, :math:`D = \mathrm{diag}(K\mathbf 1)` (pydensecrf's
    default, ``NORMALIZE_SYMMETRIC``); ``"none"`` uses :math:`K` itself.

    ``compat`` is the label cost :math:`\mu(l, l')` (Potts ``1 - I`` by default, equivalent to
    pydensecrf's ``PottsCompatibility`` whose ``-I`` differs by a per-pixel constant). A user
    matrix enters in the same way as pydensecrf's ``MatrixCompatibility``.

    Defaults: DeepLab's post-processing CRF. The DeepLab v2 release scripts
    (``run_densecrf.sh``) refine the network output on 0-255 RGB with 10 mean-field iterations,
    a bilateral kernel of weight 4, spatial std 49 px and colour std 5, and a smoothness kernel
    of weight 3 and std 3 px; the DeepLab papers cross-validated :math:`w^{(1)}, \theta_\alpha,
    \theta_\beta` per model (e.g. DeepLab v1 LargeFOV scripts use 5, 50, 3) with
    :math:`w^{(2)} = \theta_\gamma = 3` fixed. ``n_iter`` defaults to 5 here; pass 10 to match
    DeepLab exactly.

    Plain parallel updates may oscillate for strong pairwise weights (the self-excluded Potts
    energy is not concave). ``line_search=True`` damps each update,
    :math:`Q \leftarrow Q + a\,(Q^{\text{mf}} - Q)`, with the largest
    :math:`a \in \{1, 2^{-1}, \dots, 2^{-10}\}` (per image) that does not increase
    :func:`mean_field_energy`; the free energy is then non-increasing. It costs one more
    filtering in total, not per step, because the messages are linear in Q.

    The lattice backend filters with the one-way blur for plain updates (``symmetric=False`` in
    :class:`~weakseg.filtering.PermutohedralLattice`: half the blur passes, the blur of
    pydensecrf), which need no symmetric operator, and with the symmetric blur under line
    search, whose energy (:func:`mean_field_energy`) assumes one.

    Args:
        logits: Tensor[B, K, H, W] or Tensor[B, K, D, H, W], unnormalized class scores.
        images: Tensor[B, C, *spatial], float intensities (0-255 RGB, gray, or any channels).
        n_iter: number of mean-field iterations (0 returns ``softmax(logits)``).
        w_bilateral, theta_alpha, theta_beta: appearance kernel weight (>= 0), spatial std
            (pixels, or the units of ``spacing``) and intensity std.
        w_gaussian, theta_gamma: smoothness kernel weight (>= 0) and spatial std.
        compat: optional Tensor[K, K] label compatibility cost; Potts when ``None``.
        normalization: ``"symmetric"`` or ``"none"``.
        spacing: physical size of a step along each spatial axis (anisotropic volumes).
        backend: ``"lattice"`` (permutohedral lattice, O(N)) or ``"exact"`` (O(N^2) reference).
        labels: optional Tensor[B, *spatial] of class ids; labeled pixels (not ``ignore_index``)
            are clamped to their label (e.g. scribbles seeding the CRF).
        ignore_index: the "unlabeled" id in ``labels``.
        valid_mask: optional bool Tensor[B, *spatial]; pixels outside (padding) neither send
            nor receive messages and keep ``softmax(logits)``.
        line_search: damped, energy-non-increasing updates (see above).

    Returns:
        Tensor[B, K, *spatial]: the marginals Q (probabilities, sum 1 over K).
        Differentiable w.r.t. ``logits`` and ``compat`` (through all iterations).

    Example:
        >>> logits = torch.randn(1, 3, 16, 16)
        >>> images = torch.rand(1, 3, 16, 16) * 255
        >>> q = dense_crf_inference(logits, images, backend="exact")
        >>> q.shape
        torch.Size([1, 3, 16, 16])
    """
    kernels, compat, fixed, valid = _prepare(
        logits,
        images,
        KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma),
        n_iter=n_iter,
        compat=compat,
        normalization=normalization,
        spacing=spacing,
        backend=backend,
        labels=labels,
        ignore_index=ignore_index,
        valid_mask=valid_mask,
        symmetric=line_search,  # plain updates need no symmetry: the one-way blur, half the work
    )
    return run_mean_field(
        logits, kernels, compat, n_iter, fixed=fixed, valid=valid, line_search=line_search
    )


def mean_field_energy(
    probs: Tensor,
    logits: Tensor,
    images: Tensor,
    *,
    w_bilateral: float = 4.0,
    theta_alpha: float = 49.0,
    theta_beta: float = 5.0,
    w_gaussian: float = 3.0,
    theta_gamma: float = 3.0,
    compat: Tensor | None = None,
    normalization: str = "symmetric",
    spacing: Sequence[float] | None = None,
    backend: str = "lattice",
    valid_mask: Tensor | None = None,
) -> Tensor:
    r"""The mean-field free energy that :func:`dense_crf_inference` decreases, per image.

    .. math::
        F(Q) = \sum_p \langle Q_p, -\log\mathrm{softmax}(\mathrm{logits})_p \rangle
             + \tfrac12 \sum_p \langle Q_p, \mu\, m_p(Q) \rangle
             + \sum_{p,l} Q_p(l)\log Q_p(l)

    i.e. :math:`\mathrm{KL}(Q \,\|\, P) - \log Z`, with the same self-excluded messages
    :math:`m_p` as the inference. Meaningful for a symmetric ``compat``.

    Args:
        probs: Tensor[B, K, *spatial], the factorized distribution Q (rows on the simplex).
        logits, images and the kernel arguments: as in :func:`dense_crf_inference`.

    Returns:
        Tensor[B]: F(Q) for each image.
    """
    kernels, compat, _, valid = _prepare(
        logits,
        images,
        KernelParams(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma),
        n_iter=0,
        compat=compat,
        normalization=normalization,
        spacing=spacing,
        backend=backend,
        labels=None,
        ignore_index=255,
        valid_mask=valid_mask,
    )
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a torch.Tensor, got {type(probs).__name__}")
    if probs.shape != logits.shape:
        raise ValueError(
            f"probs must have the shape of logits {tuple(logits.shape)}, got {tuple(probs.shape)}"
        )
    probs = probs.to(logits.dtype)
    unary = -torch.log_softmax(logits, dim=1)
    return _free_energy(probs, unary, _pairwise(probs, _Messages(kernels), compat), valid)


class DenseCRF(nn.Module):
    """Fully connected CRF post-processing: stores the parameters of
    :func:`dense_crf_inference` and applies it in ``forward(logits, images)``.

    Attributes:
        kernels: the checked :class:`~weakseg.crf.KernelParams` (the five kernel numbers).

    Example:
        >>> crf = DenseCRF(n_iter=10, backend="exact")
        >>> q = crf(torch.randn(2, 4, 12, 12), torch.rand(2, 1, 12, 12) * 255)
        >>> q.shape
        torch.Size([2, 4, 12, 12])
    """

    def __init__(
        self,
        *,
        n_iter: int = 5,
        w_bilateral: float = 4.0,
        theta_alpha: float = 49.0,
        theta_beta: float = 5.0,
        w_gaussian: float = 3.0,
        theta_gamma: float = 3.0,
        compat: Tensor | None = None,
        normalization: str = "symmetric",
        spacing: Sequence[float] | None = None,
        backend: str = "lattice",
        line_search: bool = False,
    ) -> None:
        super().__init__()
        check_n_iter(n_iter)
        self.kernels = check_kernel_parameters(
            w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, normalization, backend
        )
        self.n_iter = n_iter
        self.normalization = normalization
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.backend = backend
        self.line_search = bool(line_search)
        self.compat: Tensor | None
        self.register_buffer("compat", None if compat is None else compat.detach().clone())

    def forward(
        self,
        logits: Tensor,
        images: Tensor,
        labels: Tensor | None = None,
        valid_mask: Tensor | None = None,
    ) -> Tensor:
        """``logits [B, K, *spatial]``, ``images [B, C, *spatial]`` -> Q ``[B, K, *spatial]``."""
        return dense_crf_inference(
            logits,
            images,
            n_iter=self.n_iter,
            **self.kernels._asdict(),
            compat=self.compat,
            normalization=self.normalization,
            spacing=self.spacing,
            backend=self.backend,
            labels=labels,
            valid_mask=valid_mask,
            line_search=self.line_search,
        )

    def extra_repr(self) -> str:
        compat = "potts" if self.compat is None else f"matrix{tuple(self.compat.shape)}"
        kernels = ", ".join(f"{k}={v}" for k, v in self.kernels._asdict().items())
        return (
            f"n_iter={self.n_iter}, {kernels}, compat={compat}, "
            f"normalization={self.normalization!r}, backend={self.backend!r}"
            + (", line_search=True" if self.line_search else "")
            + ("" if self.spacing is None else f", spacing={self.spacing}")
        )
