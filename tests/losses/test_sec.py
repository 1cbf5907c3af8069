"""SEC losses: closed forms on tiny inputs, gradients, errors, cue loading, module == function."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from weakseg.crf import dense_crf_inference
from weakseg.losses import (
    ConstrainToBoundaryLoss,
    ExpansionLoss,
    SECLoss,
    SeedingLoss,
    constrain_to_boundary_loss,
    cues_from_labels,
    dense_crf_loss,
    expansion_loss,
    load_cues,
    sec_loss,
    seeding_loss,
)
from weakseg.losses.sec import global_weighted_rank_pooling

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
# Tiny CRF for the boundary terms: exact O(N^2) filtering, few iterations, spatial stds that
# reach across the 6x6 map so that the CRF actually changes S.
TINY_CRF = {
    "n_iter": 2,
    "w_bilateral": 2.0,
    "theta_alpha": 3.0,
    "theta_beta": 40.0,
    "w_gaussian": 1.0,
    "theta_gamma": 1.5,
    "backend": "exact",
}


def _probs(b: int, k: int, h: int, w: int, *, seed: int = 0, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, h, w, generator=gen, dtype=torch.float64).softmax(1).to(device, dtype)


def _images(b: int, h: int, w: int, *, seed: int = 1, device="cpu", dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, h, w, generator=gen, dtype=torch.float64) * 255).to(device, dtype)


def _gwrp_numpy(values: np.ndarray, q: float) -> float:
    """GWRP from its definition, one class: sorted descending, weights q^(j-1)."""
    ordered = np.sort(values.ravel())[::-1]
    weights = np.array([q**j for j in range(ordered.size)])  # 0.0**0 == 1.0 in Python
    return float((ordered * weights).sum() / weights.sum())


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_seeding_hand_computed(device, dtype):
    probs = torch.tensor([[[[0.2, 0.5]], [[0.8, 0.5]]], [[[0.9, 0.3]], [[0.1, 0.7]]]])
    cues = torch.zeros(2, 2, 1, 2, dtype=torch.bool)
    cues[0, 0, 0, 0] = True  # S = 0.2
    cues[0, 1, 0, 1] = True  # S = 0.5
    cues[0, 1, 0, 0] = True  # S = 0.8 (several classes at one pixel are allowed)
    # image 1 has no cue: it contributes 0 and still counts in the batch mean
    expected = (-(math.log(0.2) + math.log(0.5) + math.log(0.8)) / 3 + 0.0) / 2
    loss = seeding_loss(probs.to(device, dtype), cues.to(device))
    assert loss.device.type == device and loss.dtype == dtype
    torch.testing.assert_close(loss.cpu().double(), torch.tensor(expected, dtype=torch.float64))


def test_seeding_accepts_float_cues_and_zero_probability():
    probs = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    cues = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    assert float(seeding_loss(probs, cues)) == 0.0  # zero-probability non-cue pixels: no NaN
    wrong = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])
    assert math.isfinite(float(seeding_loss(probs, wrong)))


def test_seeding_gradcheck():
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    cues = torch.rand(2, 3, 3, 4) > 0.6
    assert torch.autograd.gradcheck(lambda x: seeding_loss(x.softmax(1), cues), (logits,))


# ---------------------------------------------------------------- expansion


def test_gwrp_limits():
    probs = _probs(2, 3, 4, 5)
    flat = probs.flatten(2)
    ones, zeros = torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    torch.testing.assert_close(global_weighted_rank_pooling(probs, ones), flat.mean(2))
    torch.testing.assert_close(global_weighted_rank_pooling(probs, zeros), flat.amax(2))
    # q -> 0 tends to max pooling continuously
    near = global_weighted_rank_pooling(probs, torch.full((2, 3), 1e-9, dtype=torch.float64))
    torch.testing.assert_close(near, flat.amax(2), atol=1e-8, rtol=0)
    expected = _gwrp_numpy(probs[1, 2].numpy(), 0.7)
    assert global_weighted_rank_pooling(probs, torch.full((2, 3), 0.7, dtype=torch.float64))[
        1, 2
    ].item() == (pytest.approx(expected, rel=1e-12))


def test_expansion_q1_is_mean_pooling_and_q0_is_max():
    probs = _probs(1, 3, 4, 4, seed=3)
    tags = torch.ones(1, 3, dtype=torch.bool)
    mean = probs.flatten(2).mean(2)[0]
    got = expansion_loss(probs, tags, q_fg=1.0, background_index=None)
    torch.testing.assert_close(got, -mean.log().mean())
    top = probs.flatten(2).amax(2)[0]
    got = expansion_loss(probs, tags, q_fg=0.0, background_index=None)
    torch.testing.assert_close(got, -top.log().mean())


@pytest.mark.parametrize("device", DEVICES)
def test_expansion_closed_form_with_background(device):
    probs = _probs(2, 4, 5, 5, seed=4)
    # class 0 = background; tags[:, 0] is ignored (background is always present)
    tags = torch.tensor([[0, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    q_fg, q_bg = 0.9, 0.97
    expected = []
    for b in range(2):
        s = probs[b].numpy()
        present = [k for k in (1, 2, 3) if tags[b, k]]
        absent = [k for k in (1, 2, 3) if not tags[b, k]]
        value = -np.mean([math.log(_gwrp_numpy(s[k], q_fg)) for k in present])
        value -= np.mean([math.log(1 - s[k].max()) for k in absent])
        value -= math.log(_gwrp_numpy(s[0], q_bg))
        expected.append(value)
    got = expansion_loss(probs.to(device), tags.to(device), q_fg=q_fg, q_bg=q_bg)
    assert got.item() == pytest.approx(float(np.mean(expected)), rel=1e-10)


def test_expansion_sec_defaults_uniform():
    # Uniform S = 1/K: every pooling gives 1/K whatever the decay.
    k = 4
    probs = torch.full((1, k, 6, 6), 1 / k, dtype=torch.float64)
    tags = torch.tensor([[1, 1, 0, 1]])
    expected = -math.log(1 / k) - math.log(1 - 1 / k) - math.log(1 / k)
    assert expansion_loss(probs, tags).item() == pytest.approx(expected, rel=1e-12)


def test_expansion_gradcheck():
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[1, 1, 0], [1, 0, 1]])

    def fn(x):
        return expansion_loss(x.softmax(1), tags, q_fg=0.8, q_bg=0.9)

    assert torch.autograd.gradcheck(fn, (logits,))


# ---------------------------------------------------------------- constrain to boundary


def test_constrain_zero_without_pairwise():
    probs = _probs(2, 3, 6, 6)
    crf = {**TINY_CRF, "w_bilateral": 0.0, "w_gaussian": 0.0}
    loss = constrain_to_boundary_loss(probs, _images(2, 6, 6), **crf)
    assert abs(loss.item()) < 1e-12  # Q = softmax(log S) = S


def test_constrain_matches_kl_of_dense_crf_inference():
    probs, images = _probs(2, 3, 6, 6), _images(2, 6, 6)
    q = dense_crf_inference(probs.log(), images, **TINY_CRF)
    expected = (q * (q.log() - probs.log())).sum(1).mean()
    got = constrain_to_boundary_loss(probs, images, **TINY_CRF)
    torch.testing.assert_close(got, expected)
    assert got.item() > 1e-4  # the CRF did change S


def test_constrain_gradient_treats_crf_output_as_constant():
    probs = _probs(2, 3, 6, 6).requires_grad_()
    images = _images(2, 6, 6)
    constrain_to_boundary_loss(probs, images, **TINY_CRF).backward()
    q = dense_crf_inference(probs.detach().log(), images, **TINY_CRF)
    n = 2 * 6 * 6  # batch mean of per-image pixel means
    torch.testing.assert_close(probs.grad, -q / probs.detach() / n)


def test_constrain_gradcheck_through_crf():
    logits = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    images = _images(1, 4, 4)

    def fn(x):
        return constrain_to_boundary_loss(x.softmax(1), images, backprop_crf=True, **TINY_CRF)

    assert torch.autograd.gradcheck(fn, (logits,))


def test_constrain_resizes_images_and_respects_valid_mask():
    probs = _probs(1, 3, 6, 6)
    big = _images(1, 12, 12)
    small = F.interpolate(big, size=(6, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        constrain_to_boundary_loss(probs, big, **TINY_CRF),
        constrain_to_boundary_loss(probs, small, **TINY_CRF),
    )
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    valid[:, :, 4:] = False
    padded = probs.clone()
    padded[:, :, :, 4:] = float("nan")  # excluded pixels must not leak
    masked = constrain_to_boundary_loss(padded, small, valid, **TINY_CRF)
    cropped = constrain_to_boundary_loss(probs[..., :4], small[..., :4], **TINY_CRF)
    torch.testing.assert_close(masked, cropped)


# ---------------------------------------------------------------- sec_loss and modules


@pytest.mark.parametrize("device", DEVICES)
def test_sec_loss_is_the_sum_of_its_terms(device):
    probs, images = _probs(2, 3, 6, 6, device=device), _images(2, 12, 12, device=device)
    cues = torch.rand(2, 3, 6, 6, device=device) > 0.8
    tags = torch.tensor([[1, 1, 0], [1, 0, 1]], device=device)
    out = sec_loss(probs, images, cues, tags, boundary_weight=0.5, **TINY_CRF)
    torch.testing.assert_close(out.seeding, seeding_loss(probs, cues))
    torch.testing.assert_close(out.expansion, expansion_loss(probs, tags))
    torch.testing.assert_close(out.boundary, constrain_to_boundary_loss(probs, images, **TINY_CRF))
    torch.testing.assert_close(out.loss, out.seeding + out.expansion + 0.5 * out.boundary)


def test_sec_loss_dense_crf_variant():
    probs, images = _probs(2, 3, 6, 6), _images(2, 6, 6)
    cues = torch.rand(2, 3, 6, 6) > 0.8
    tags = torch.tensor([[1, 1, 0], [1, 0, 1]])
    out = sec_loss(
        probs, images, cues, tags, boundary="dense_crf_loss", sigma_xy=3.0, backend="exact"
    )
    crf = dense_crf_loss(images, probs, sigma_xy=3.0, backend="exact")
    torch.testing.assert_close(out.boundary, crf)
    torch.testing.assert_close(
        out.loss, seeding_loss(probs, cues) + expansion_loss(probs, tags) + crf
    )


def test_sec_loss_gradcheck_dense_crf_variant():
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    images = _images(1, 4, 4)
    cues = torch.rand(1, 3, 4, 4) > 0.7
    tags = torch.tensor([[1, 0, 1]])

    def fn(x):
        out = sec_loss(
            x.softmax(1), images, cues, tags, boundary="dense_crf_loss", backend="exact",
            sigma_xy=2.0, q_fg=0.8, q_bg=0.9,
        )  # fmt: skip
        return out.loss

    assert torch.autograd.gradcheck(fn, (logits,))


def test_modules_equal_functions():
    probs, images = _probs(2, 3, 6, 6), _images(2, 6, 6)
    cues = torch.rand(2, 3, 6, 6) > 0.8
    tags = torch.tensor([[1, 1, 0], [1, 0, 1]])
    torch.testing.assert_close(SeedingLoss(2.0)(probs, cues), 2 * seeding_loss(probs, cues))
    torch.testing.assert_close(
        ExpansionLoss(q_fg=0.9, q_bg=0.95)(probs, tags),
        expansion_loss(probs, tags, q_fg=0.9, q_bg=0.95),
    )
    torch.testing.assert_close(
        ConstrainToBoundaryLoss(**TINY_CRF)(probs, images),
        constrain_to_boundary_loss(probs, images, **TINY_CRF),
    )
    for boundary in ("crf_inference", "dense_crf_loss"):
        module = SECLoss(boundary=boundary, sigma_xy=3.0, **TINY_CRF)
        function = sec_loss(probs, images, cues, tags, boundary=boundary, sigma_xy=3.0, **TINY_CRF)
        for a, b in zip(module(probs, images, cues, tags), function, strict=True):
            torch.testing.assert_close(a, b)
    assert "q_fg=0.996" in repr(SECLoss())
    assert "sigma_xy=3.0" in repr(SECLoss(boundary="dense_crf_loss", sigma_xy=3.0))
    assert "backprop_crf=True" in repr(ConstrainToBoundaryLoss(backprop_crf=True))
    assert "weight=2.0" in repr(SeedingLoss(2.0))


def test_sec_loss_weights_and_no_boundary():
    probs, images = _probs(2, 3, 6, 6), _images(2, 6, 6)
    cues = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.8
    tags = torch.tensor([[1, 1, 0], [1, 0, 1]])
    out = sec_loss(probs, images, cues, tags, boundary="none", seed_weight=2.0, expand_weight=0.5)
    assert out.boundary.item() == 0.0 and out.boundary.dtype == probs.dtype
    expected = 2.0 * seeding_loss(probs, cues) + 0.5 * expansion_loss(probs, tags)
    torch.testing.assert_close(out.loss, expected)
    assert "boundary='none'" in repr(SECLoss(boundary="none"))
    assert "theta_alpha" not in repr(SECLoss(boundary="none"))


def test_sec_loss_scale_factor_resizes_probs_pools_cues_and_mask():
    probs, images = _probs(2, 3, 8, 8), _images(2, 8, 8)
    cues = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    cues[:, 0, 0, :] = True  # a one-pixel-thin cue: max pooling keeps it at half size
    cues[0, 2, 5, 5] = True
    tags = torch.tensor([[1, 0, 1], [1, 1, 0]])
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[1, :, 6:] = False
    kwargs = {"boundary": "dense_crf_loss", "sigma_xy": 2.0, "backend": "exact"}
    got = sec_loss(probs, images, cues, tags, valid, scale_factor=0.5, **kwargs)
    small = F.interpolate(probs, size=(4, 4), mode="bilinear", align_corners=False)
    small_cues = F.max_pool2d(cues.double(), 2) > 0
    assert bool(small_cues[:, 0, 0].all()) and bool(small_cues[0, 2, 2, 2])
    small_valid = valid[:, ::2, ::2]  # nearest neighbour at half size
    expected = sec_loss(small, images, small_cues, tags, small_valid, **kwargs)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    module = SECLoss(scale_factor=0.5, **kwargs)
    torch.testing.assert_close(module(probs, images, cues, tags, valid).loss, got.loss)
    assert "scale_factor=0.5" in repr(module)


def test_sec_loss_scale_factor_gradient_reaches_full_resolution():
    logits = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    cues = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    cues[0, 1, 3, 2:6] = True
    out = sec_loss(
        logits.softmax(1), _images(1, 8, 8), cues, torch.tensor([[1, 1, 0]]),
        scale_factor=0.5, **TINY_CRF,
    )  # fmt: skip
    out.loss.backward()
    assert logits.grad is not None and bool((logits.grad != 0).any())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scale_factor": 1.5}, ValueError, r"scale_factor must be in \(0, 1\].*got 1\.5"),
        ({"scale_factor": "half"}, TypeError, r"scale_factor must be a number .*got 'half'"),
        ({"expand_weight": -2}, ValueError, r"expand_weight must be a finite number >= 0.*-2"),
        ({"crf_normalization": "l1"}, ValueError, r"crf_normalization must be one of .*'l1'"),
        ({"loss_normalization": "l1"}, ValueError, r"loss_normalization must be one of .*'l1'"),
        ({"backend": "gpu"}, ValueError, r"backend must be one of .*got 'gpu'"),
        ({"n_iter": -1}, ValueError, r"n_iter must be >= 0, got -1"),
        ({"backprop_crf": "yes"}, TypeError, r"backprop_crf must be true or false, got 'yes'"),
        ({"background_index": -1}, ValueError, r"background_index must be in .*got -1"),
    ],
)
def test_sec_module_checks_every_parameter_when_built(kwargs, error, message):
    with pytest.raises(error, match=message):
        SECLoss(**kwargs)


def test_sec_loss_scale_factor_too_small():
    with pytest.raises(ValueError, match=r"scale_factor=0\.1 shrinks the spatial size \(6, 6\)"):
        sec_loss(_probs(1, 3, 6, 6), _images(1, 6, 6), torch.zeros(1, 3, 6, 6), torch.ones(1, 3),
                 scale_factor=0.1)  # fmt: skip


def test_inputs_not_modified():
    probs, images = _probs(1, 3, 6, 6), _images(1, 6, 6)
    cues = torch.rand(1, 3, 6, 6) > 0.8
    tags = torch.tensor([[0, 1, 0]])  # the ignored background entry stays 0
    copies = [t.clone() for t in (probs, images, cues, tags)]
    sec_loss(probs, images, cues, tags, **TINY_CRF)
    for original, copy in zip((probs, images, cues, tags), copies, strict=True):
        assert torch.equal(original, copy)


# ---------------------------------------------------------------- cues


def test_cues_from_labels():
    labels = torch.tensor([[[0, 255], [2, 1]]])
    cues = cues_from_labels(labels, 3)
    assert cues.shape == (1, 3, 2, 2) and cues.dtype == torch.bool
    assert cues.sum().item() == 3 and not cues[0, :, 0, 1].any()
    assert cues[0, 2, 1, 0] and cues[0, 1, 1, 1] and cues[0, 0, 0, 0]


def test_load_cues(tmp_path):
    first = np.full((4, 5), 255, dtype=np.uint8)
    first[0, 0], first[3, 4] = 0, 2
    second = np.full((8, 10), 255, dtype=np.uint8)
    second[:2, :2] = 1
    Image.fromarray(first).save(tmp_path / "a.png")
    Image.fromarray(second).save(tmp_path / "b.png")
    cues = load_cues(tmp_path, ["a"], 3)
    assert cues.shape == (1, 3, 4, 5)
    assert torch.equal(cues, cues_from_labels(torch.from_numpy(first.astype(np.int64))[None], 3))
    resized = load_cues(tmp_path, ["a", "b"], 3, size=(4, 5))
    assert resized.shape == (2, 3, 4, 5) and resized[1, 1, 0, 0] and resized[1, 1].sum() == 1
    with pytest.raises(ValueError, match=r"b\.png is 10x8 \(WxH\).*pass size"):
        load_cues(tmp_path, ["a", "b"], 3)
    with pytest.raises(ValueError, match=r"holds class ids \[2\] >= num_classes=2"):
        load_cues(tmp_path, ["a"], 2)
    with pytest.raises(FileNotFoundError, match=r"missing cue file: .*c\.png"):
        load_cues(tmp_path, ["c"], 3)
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png has mode 'RGB'.*single-channel"):
        load_cues(tmp_path, ["rgb"], 3)
    with pytest.raises(ValueError, match="ids is empty"):
        load_cues(tmp_path, [], 3)


# ---------------------------------------------------------------- errors


def test_errors():
    probs, images = _probs(2, 3, 6, 6), _images(2, 6, 6)
    cues = torch.zeros(2, 3, 6, 6, dtype=torch.bool)
    tags = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"cues must have the shape of probs .* got \(2, 6, 6\)"):
        seeding_loss(probs, cues[:, 0])
    with pytest.raises(ValueError, match=r"cues must hold only 0/1 .* such as \[0\.5\]"):
        seeding_loss(probs, torch.full((2, 3, 6, 6), 0.5))
    with pytest.raises(ValueError, match=r"probs must sum to 1 over the K=3 classes"):
        seeding_loss(probs * 2, cues)
    with pytest.raises(TypeError, match=r"cues must be a torch\.Tensor, got list"):
        seeding_loss(probs, [[0]])
    with pytest.raises(ValueError, match=r"tags must have shape \[B, K\] = \(2, 3\).*got \(2, 2\)"):
        expansion_loss(probs, tags[:, :2])
    with pytest.raises(ValueError, match=r"tags must hold only 0/1"):
        expansion_loss(probs, tags * 3)
    with pytest.raises(ValueError, match=r"q_fg must be in \[0, 1\].*got 1\.5"):
        expansion_loss(probs, tags, q_fg=1.5)
    with pytest.raises(ValueError, match=r"q_bg must be in \[0, 1\].*got -0\.1"):
        ExpansionLoss(q_bg=-0.1)
    with pytest.raises(ValueError, match=r"background_index must be in 0\.\.2 \(K=3\).*got 3"):
        expansion_loss(probs, tags, background_index=3)
    with pytest.raises(ValueError, match=r"boundary must be one of .*got 'crf'"):
        sec_loss(probs, images, cues, tags, boundary="crf")
    with pytest.raises(ValueError, match=r"boundary must be one of"):
        SECLoss(boundary="crf")
    with pytest.raises(ValueError, match=r"boundary_weight must be a finite number >= 0"):
        sec_loss(probs, images, cues, tags, boundary_weight=-1)
    with pytest.raises(ValueError, match=r"batch size mismatch: probs has 2 .* images has 1"):
        constrain_to_boundary_loss(probs, images[:1], **TINY_CRF)
    with pytest.raises(ValueError, match=r"images must hold intensities in the 0-255 range"):
        constrain_to_boundary_loss(probs, images * 10, **TINY_CRF)
    with pytest.raises(TypeError, match=r"valid_mask must be a bool tensor"):
        constrain_to_boundary_loss(probs, images, torch.ones(2, 6, 6), **TINY_CRF)
    with pytest.raises(ValueError, match=r"theta_alpha"):
        constrain_to_boundary_loss(probs, images, **{**TINY_CRF, "theta_alpha": -1.0})
    with pytest.raises(ValueError, match=r"labels holds class ids \[5\] outside 0\.\.2"):
        cues_from_labels(torch.tensor([[[5, 255]]]), 3)
    with pytest.raises(TypeError, match=r"labels must be an integer tensor"):
        cues_from_labels(torch.zeros(1, 2, 2), 3)
