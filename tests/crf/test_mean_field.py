import pytest
import torch

from weakseg.crf import DenseCRF, KernelParams, dense_crf_inference, mean_field_energy
from weakseg.crf._kernels import build_kernels

from ._reference import free_energy, mean_field_step, pairwise_matrix

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Bandwidths small enough that a 6x7 image has non-trivial structure.
TINY = {"theta_alpha": 3.0, "theta_beta": 40.0, "theta_gamma": 1.5}


def _inputs(b=2, k=3, spatial=(6, 7), c=3, device="cpu", dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, k, *spatial, generator=g, dtype=dtype) * 2).to(device)
    images = (torch.rand(b, c, *spatial, generator=g, dtype=dtype) * 255).to(device)
    return logits, images


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("spatial", "channels"), [((6, 7), 3), ((6, 7), 1), ((3, 4, 5), 2), ((5, 5), 4)]
)
def test_smoke_shapes_2d_3d_gray_multichannel(device, spatial, channels):
    logits, images = _inputs(spatial=spatial, c=channels, device=device)
    q = dense_crf_inference(logits, images, backend="exact", **TINY)
    assert q.shape == logits.shape and q.device == logits.device and q.dtype == logits.dtype
    torch.testing.assert_close(q.sum(1), torch.ones_like(q[:, 0]))


@pytest.mark.parametrize("device", DEVICES)
def test_zero_pairwise_weight_gives_softmax_exactly(device):
    logits, images = _inputs(device=device)
    q = dense_crf_inference(
        logits, images, n_iter=7, w_bilateral=0, w_gaussian=0, backend="exact", **TINY
    )
    assert torch.equal(q, torch.softmax(logits, dim=1))
    q0 = dense_crf_inference(logits, images, n_iter=0, backend="exact", **TINY)
    assert torch.equal(q0, torch.softmax(logits, dim=1))


@pytest.mark.parametrize("normalization", ["symmetric", "none"])
@pytest.mark.parametrize("potts", [True, False])
def test_matches_brute_force_iterations(normalization, potts):
    logits, images = _inputs()
    compat = None if potts else torch.rand(3, 3, dtype=torch.float64)
    mu = 1 - torch.eye(3, dtype=torch.float64) if potts else compat
    w_b, w_g = (2.0, 1.0) if normalization == "symmetric" else (0.3, 0.2)
    pairwise = pairwise_matrix(images, w_b, 3.0, 40.0, w_g, 1.5, normalization)
    expected = torch.softmax(logits, dim=1)
    for _ in range(3):
        expected = mean_field_step(logits, expected, pairwise, mu)
    q = dense_crf_inference(
        logits,
        images,
        n_iter=3,
        w_bilateral=w_b,
        w_gaussian=w_g,
        compat=compat,
        normalization=normalization,
        backend="exact",
        **TINY,
    )
    torch.testing.assert_close(q, expected)
    energy = mean_field_energy(
        q,
        logits,
        images,
        w_bilateral=w_b,
        w_gaussian=w_g,
        compat=compat,
        normalization=normalization,
        backend="exact",
        **TINY,
    )
    torch.testing.assert_close(energy, free_energy(logits, q, pairwise, mu))


@pytest.mark.parametrize("seed", range(6))
def test_energy_non_increasing_potts_deeplab_weights(seed):
    # Plain parallel updates at DeepLab-scale weights (symmetric normalization): monotone here.
    logits, images = _inputs(seed=seed)
    kw = {"w_bilateral": 4.0, "w_gaussian": 3.0, "backend": "exact", **TINY}
    energies = [
        mean_field_energy(dense_crf_inference(logits, images, n_iter=t, **kw), logits, images, **kw)
        for t in range(8)
    ]
    steps = torch.stack(energies).diff(dim=0)
    assert bool((steps <= 1e-10).all()), steps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("normalization", ["symmetric", "none"])
def test_energy_non_increasing_with_line_search_strong_weights(seed, normalization):
    # Strong coupling makes plain parallel updates oscillate; the damped updates never go up.
    logits, images = _inputs(seed=seed)
    w = (20.0, 10.0) if normalization == "symmetric" else (2.0, 1.0)
    kw = {"w_bilateral": w[0], "w_gaussian": w[1], "normalization": normalization}
    kw |= {"backend": "exact", **TINY}
    energies = [
        mean_field_energy(
            dense_crf_inference(logits, images, n_iter=t, line_search=True, **kw),
            logits,
            images,
            **kw,
        )
        for t in range(10)
    ]
    steps = torch.stack(energies).diff(dim=0)
    assert bool((steps <= 1e-10).all()), steps
    assert float(energies[-1].sum()) < float(energies[0].sum())


def test_plain_updates_can_oscillate_where_line_search_does_not():
    # Two pixels, strong Potts coupling, opposite beliefs: parallel updates swap them forever.
    logits = torch.tensor([[[[2.0, -2.0]], [[-2.0, 2.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    images = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    kw = {"w_bilateral": 0.0, "w_gaussian": 30.0, "theta_gamma": 10.0, "normalization": "none"}
    kw |= {"backend": "exact"}
    plain = [dense_crf_inference(logits, images, n_iter=t, **kw)[0, 0, 0] for t in (1, 2)]
    assert float(plain[0][0]) < 0.5 < float(plain[1][0])  # the labels flip every iteration
    e = [
        mean_field_energy(
            dense_crf_inference(logits, images, n_iter=t, line_search=True, **kw),
            logits,
            images,
            **kw,
        )
        for t in range(6)
    ]
    assert bool((torch.stack(e).diff(dim=0) <= 1e-12).all())


def test_batch_items_are_independent():
    logits, images = _inputs(b=3)
    q = dense_crf_inference(logits, images, backend="exact", **TINY)
    for i in range(3):
        qi = dense_crf_inference(logits[i : i + 1], images[i : i + 1], backend="exact", **TINY)
        torch.testing.assert_close(q[i : i + 1], qi)


def test_labels_are_clamped_and_valid_mask_excludes_pixels():
    logits, images = _inputs()
    labels = torch.full((2, 6, 7), 255)
    labels[0, 1, 1], labels[1, 4, 5] = 2, 0
    q = dense_crf_inference(logits, images, labels=labels, backend="exact", **TINY)
    assert float(q[0, 2, 1, 1]) == 1.0 and float(q[1, 0, 4, 5]) == 1.0
    valid = torch.ones(2, 6, 7, dtype=torch.bool)
    valid[:, :, 5:] = False
    qv = dense_crf_inference(logits, images, valid_mask=valid, backend="exact", **TINY)
    torch.testing.assert_close(qv[..., 5:], torch.softmax(logits, dim=1)[..., 5:])
    cropped = dense_crf_inference(logits[..., :5], images[..., :5], backend="exact", **TINY)
    torch.testing.assert_close(qv[..., :5], cropped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalization", ["symmetric", "none"])
def test_flat_lattice_updates_equal_the_differentiable_path(dtype, normalization):
    # Without autograd, lattice kernels run the flat path (weights folded into splat and slice,
    # the fused update kernel for float32 with numba); with autograd, the term-by-term path.
    logits, images = _inputs(b=2, k=4, spatial=(9, 11), dtype=dtype)
    labels = torch.full((2, 9, 11), 255)
    labels[0, 2, 3], labels[1, 5, 5], labels[1, 0, 10] = 1, 3, 0
    valid = torch.ones(2, 9, 11, dtype=torch.bool)
    valid[1, :, 8:] = False
    kwargs = {"labels": labels, "valid_mask": valid, "normalization": normalization, **TINY}
    fast = dense_crf_inference(logits, images, **kwargs)
    reference = dense_crf_inference(logits.clone().requires_grad_(True), images, **kwargs)
    assert fast.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast, reference.detach(), rtol=tolerance, atol=tolerance)
    assert float(fast[0, 1, 2, 3]) == 1.0 and float(fast[1, 3, 5, 5]) == 1.0


def test_gradcheck_through_iterations():
    logits, images = _inputs(b=1, k=2, spatial=(3, 4))
    logits.requires_grad_(True)
    compat = torch.rand(2, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda x, c: dense_crf_inference(x, images, n_iter=2, compat=c, backend="exact", **TINY),
        (logits, compat),
    )


@pytest.mark.parametrize("normalization", ["symmetric", "none"])
def test_gradcheck_potts_with_labels_and_valid_mask(normalization):
    # Potts takes the fused update softmax(logits + M(q)); under autograd it must not reuse
    # buffers, and without autograd (buffers reused across iterations) it must give the same Q.
    logits, images = _inputs(b=2, k=3, spatial=(3, 4))
    labels = torch.full((2, 3, 4), 255)
    labels[:, 0, 0] = 1
    valid = torch.ones(2, 3, 4, dtype=torch.bool)
    valid[:, :, -1] = False
    kw = {"n_iter": 3, "normalization": normalization, "backend": "exact", **TINY}
    kw |= {"labels": labels, "valid_mask": valid}
    logits.requires_grad_(True)
    torch.autograd.gradcheck(lambda x: dense_crf_inference(x, images, **kw), (logits,))
    with torch.no_grad():
        q = dense_crf_inference(logits, images, **kw)
    torch.testing.assert_close(dense_crf_inference(logits, images, **kw).detach(), q)


def test_smoothness_kernel_is_reused_for_the_same_size_only():
    params = KernelParams(w_bilateral=1.0, theta_alpha=3.0, theta_beta=40.0, w_gaussian=1.0)
    params = params._replace(theta_gamma=1.5)
    kw = {"normalization": "symmetric", "spacing": None, "backend": "exact"}
    images = torch.rand(1, 3, 6, 7, dtype=torch.float64) * 255
    first, second = build_kernels(images, params, **kw), build_kernels(images * 0.5, params, **kw)
    assert second[1][1] is first[1][1] and second[0][1] is not first[0][1]
    assert build_kernels(images[..., :6], params, **kw)[1][1] is not first[1][1]
    mask = torch.ones(1, 1, 6, 7, dtype=torch.float64)
    masked = build_kernels(images, params, **kw, mask=mask)[1][1]
    assert masked is not first[1][1]
    q = torch.softmax(torch.randn(1, 3, 6, 7, dtype=torch.float64), dim=1)
    torch.testing.assert_close(masked(q), first[1][1](q))


def test_module_equals_function_and_repr():
    logits, images = _inputs()
    compat = torch.rand(3, 3, dtype=torch.float64)
    kw = {"n_iter": 4, "w_bilateral": 5.0, "w_gaussian": 2.0, "backend": "exact", **TINY}
    crf = DenseCRF(compat=compat, **kw)
    torch.testing.assert_close(
        crf(logits, images), dense_crf_inference(logits, images, compat=compat, **kw)
    )
    assert "n_iter=4" in repr(crf) and "theta_alpha=3.0" in repr(crf) and "matrix" in repr(crf)
    assert "compat=potts" in repr(DenseCRF())


@pytest.mark.parametrize("device", DEVICES)
def test_lattice_close_to_exact(device):
    g = torch.Generator().manual_seed(3)
    images = torch.zeros(1, 3, 24, 24)
    images[:, :, :, 12:] = 200.0
    images = (images + torch.rand(1, 3, 24, 24, generator=g) * 20).to(device)
    logits = (torch.randn(1, 4, 24, 24, generator=g)).to(device)
    kw = {"n_iter": 5, "theta_alpha": 10.0, "theta_beta": 20.0, "theta_gamma": 2.0}
    exact = dense_crf_inference(logits, images, backend="exact", **kw)
    approx = dense_crf_inference(logits, images, backend="lattice", **kw)
    assert float((exact - approx).abs().mean()) < 0.03
    agreement = (exact.argmax(1) == approx.argmax(1)).float().mean()
    assert float(agreement) >= 0.97


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": [1.0]}, TypeError, "logits must be a torch.Tensor"),
        ({"logits": torch.zeros(2, 3, 6)}, ValueError, r"logits must have shape \[B, K, H, W\]"),
        ({"logits": torch.zeros(2, 3, 6, 7, dtype=torch.long)}, TypeError, "logits must be a "),
        ({"images": torch.zeros(1, 3, 6, 7)}, ValueError, "batch size mismatch"),
        ({"images": torch.zeros(2, 3, 6, 8)}, ValueError, "spatial size mismatch"),
        ({"images": torch.zeros(2, 3, 2, 6, 7)}, ValueError, "same number of dims"),
        ({"logits": torch.full((2, 3, 6, 7), float("nan"))}, ValueError, "logits contains"),
        ({"n_iter": -1}, ValueError, "n_iter must be >= 0, got -1"),
        ({"n_iter": 2.0}, TypeError, "n_iter must be an int"),
        ({"w_bilateral": -1.0}, ValueError, "w_bilateral must be a finite number >= 0"),
        ({"theta_alpha": 0.0}, ValueError, "theta_alpha must be a finite number > 0"),
        ({"theta_gamma": "x"}, TypeError, "theta_gamma must be a positive number"),
        ({"normalization": "row"}, ValueError, "normalization must be one of"),
        ({"backend": "cpp"}, ValueError, "backend must be one of"),
        ({"compat": torch.zeros(2, 2)}, ValueError, r"compat must have shape \[K, K\] = \(3, 3\)"),
        ({"labels": torch.zeros(2, 6, 7)}, TypeError, "labels must be an integer tensor"),
        ({"labels": torch.zeros(2, 6, 6, dtype=torch.long)}, ValueError, "labels must have shape"),
        ({"labels": torch.full((2, 6, 7), 7)}, ValueError, r"class ids in 0..2 .*\[7\]"),
        ({"valid_mask": torch.ones(2, 6, 7)}, TypeError, "valid_mask must be a bool tensor"),
    ],
)
def test_errors(kwargs, error, match):
    args = {"logits": torch.zeros(2, 3, 6, 7), "images": torch.zeros(2, 3, 6, 7)}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(error, match=match):
        dense_crf_inference(args["logits"], args["images"], **({"backend": "exact"} | kwargs))


def test_energy_errors():
    logits, images = _inputs()
    with pytest.raises(ValueError, match="probs must have the shape of logits"):
        mean_field_energy(logits[:, :2], logits, images, backend="exact")
    with pytest.raises(TypeError, match=r"probs must be a torch\.Tensor"):
        mean_field_energy(None, logits, images, backend="exact")
