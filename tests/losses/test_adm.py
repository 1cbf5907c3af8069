import pytest
import torch
import torch.nn.functional as F

from weakseg.crf import dense_crf_inference
from weakseg.filtering import intensity_position_features
from weakseg.losses import DenseCRFADMLoss, densecrf_adm_loss


def kernel_matrix(features):
    """Explicit affinity exp(-|f_p - f_q|^2 / 2): Tensor[B, N, N]."""
    points = features.flatten(2).transpose(1, 2)  # (B, N, D)
    return torch.exp(-0.5 * torch.cdist(points, points).square())


TINY = {"theta_alpha": 3.0, "theta_beta": 40.0, "theta_gamma": 1.5, "backend": "exact"}


def _inputs(b=2, k=3, spatial=(6, 7)):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(b, k, *spatial, generator=g, dtype=torch.float64)
    images = torch.rand(b, 1, *spatial, generator=g, dtype=torch.float64) * 255
    scribbles = torch.full((b, *spatial), 255)
    scribbles[:, 1, 1:4] = 0
    scribbles[:, 4, 2:6] = 2
    scribbles[0, 3, 0] = 1
    return logits, images, scribbles


def test_loss_proposals_and_dense_crf_value_match_reference():
    logits, images, scribbles = _inputs()
    logits.requires_grad_(True)
    out = densecrf_adm_loss(logits, images, scribbles, sigma_rgb=30.0, sigma_xy=4.0, **TINY)
    x = dense_crf_inference(logits.detach(), images, labels=scribbles, **TINY)
    torch.testing.assert_close(out.proposals, x)
    assert not out.proposals.requires_grad and not out.dense_crf_loss.requires_grad
    labeled = scribbles != 255
    log_s = torch.log_softmax(logits, dim=1)
    pce = F.nll_loss(log_s, scribbles, ignore_index=255)
    ce_x = -(x * log_s).sum(1)[~labeled].mean()
    torch.testing.assert_close(out.loss, pce + ce_x)
    # R(S) = sum_k S_k' W (1 - S_k) / 1' W 1 with the explicit N x N affinity.
    w = kernel_matrix(intensity_position_features(images, 30.0, 4.0))  # (B, N, N)
    s = torch.softmax(logits.detach(), dim=1).flatten(2)  # (B, K, N)
    cut = torch.einsum("bkp,bpq,bkq->b", s, w, 1 - s)
    torch.testing.assert_close(out.dense_crf_loss, (cut / w.sum((1, 2))).mean())
    # No gradient through X: the gradient is that of pCE + CE(X.detach(), S).
    (g_out,) = torch.autograd.grad(out.loss, logits)
    (g_ref,) = torch.autograd.grad(pce + ce_x, logits)
    torch.testing.assert_close(g_out, g_ref)


def test_proposals_keep_scribbles_and_valid_mask_excludes_padding():
    logits, images, scribbles = _inputs()
    out = densecrf_adm_loss(logits, images, scribbles, **TINY)
    labeled = scribbles != 255
    assert bool((out.proposals.argmax(1)[labeled] == scribbles[labeled]).all())
    valid = torch.ones(2, 6, 7, dtype=torch.bool)
    valid[:, :, 6:] = False
    masked = densecrf_adm_loss(logits, images, scribbles, valid_mask=valid, **TINY)
    cropped = densecrf_adm_loss(logits[..., :6], images[..., :6], scribbles[..., :6], **TINY)
    torch.testing.assert_close(masked.loss, cropped.loss)
    torch.testing.assert_close(masked.dense_crf_loss, cropped.dense_crf_loss)


def test_adm_steps_reduce_loss_on_free_logits():
    logits, images, scribbles = _inputs(b=1)
    logits.requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=5.0)
    values = []
    for _ in range(5):
        out = densecrf_adm_loss(logits, images, scribbles, **TINY)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        values.append(float(out.loss.detach()))
    assert values[-1] < values[0]


def test_module_equals_function_and_errors():
    logits, images, scribbles = _inputs()
    module = DenseCRFADMLoss(n_iter=3, sigma_xy=5.0, **TINY)
    a = module(logits, images, scribbles)
    b = densecrf_adm_loss(logits, images, scribbles, n_iter=3, sigma_xy=5.0, **TINY)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    assert "sigma_xy=5.0" in repr(module) and "compat=potts" in repr(module)
    with pytest.raises(ValueError, match="sigma_rgb must be a finite number > 0"):
        densecrf_adm_loss(logits, images, scribbles, sigma_rgb=0, **TINY)
    with pytest.raises(ValueError, match="scribbles must have shape"):
        densecrf_adm_loss(logits, images, scribbles[:, :5], **TINY)
    with pytest.raises(TypeError, match="scribbles must be an integer tensor"):
        densecrf_adm_loss(logits, images, scribbles.double(), **TINY)
    with pytest.raises(ValueError, match=r"class ids in 0..2"):
        densecrf_adm_loss(logits, images, scribbles.clamp_max(5), **TINY)
